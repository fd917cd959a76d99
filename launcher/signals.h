// Stop requests by signal (SIGTERM, SIGUSR1 — Slurm's warning before the time limit — and
// SIGINT): the first one is remembered and the trainer stops at the next step boundary after a
// checkpoint; a second SIGINT ends the process at once (the previous checkpoint stays).
#pragma once

namespace spartan::launcher {

void install_stop_signals();
// The first stop signal received, or 0.
int pending_stop_signal();

}  // namespace spartan::launcher
