#include "launcher/signals.h"

#include <unistd.h>

#include <atomic>
#include <csignal>

namespace spartan::launcher {
namespace {

std::atomic<int> g_signal{0};

void on_signal(int sig) {
  if (sig == SIGINT && g_signal.load() == SIGINT) ::_exit(128 + SIGINT);  // the second ^C
  int none = 0;
  g_signal.compare_exchange_strong(none, sig);
}

}  // namespace

void install_stop_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGTERM, SIGUSR1, SIGINT}) sigaction(sig, &sa, nullptr);
}

int pending_stop_signal() { return g_signal.load(); }

}  // namespace spartan::launcher
