// spartan::Error — the one exception type of the project.
//
// Every error a user can cause says three things: what went wrong, where (file, line, key,
// tensor, rank), and what to do about it. `main` prints it as one line,
//   spartan: error: <what>, <where>, <what to do>
// and exits with exit_code(): 2 for usage and configuration errors, 1 for runtime errors.
#pragma once

#include <stdexcept>
#include <string>

namespace spartan {

class Error : public std::runtime_error {
 public:
  Error(std::string what, std::string where, std::string todo, int exit_code = 1)
      : std::runtime_error(join(what, where, todo)),
        what_(std::move(what)),
        where_(std::move(where)),
        todo_(std::move(todo)),
        exit_code_(exit_code) {}

  const std::string& problem() const { return what_; }
  const std::string& where() const { return where_; }
  const std::string& todo() const { return todo_; }
  int exit_code() const { return exit_code_; }

 private:
  static std::string join(const std::string& a, const std::string& b, const std::string& c) {
    std::string s = a;
    if (!b.empty()) s += ", " + b;
    if (!c.empty()) s += ", " + c;
    return s;
  }
  std::string what_, where_, todo_;
  int exit_code_;
};

// A run stopped on request (SIGTERM, SIGUSR1, SIGINT) after saving a checkpoint: not a failure;
// exit code 75 (EX_TEMPFAIL: run the same command again to continue).
class Stopped : public Error {
 public:
  static constexpr int kExitCode = 75;
  Stopped(std::string what, std::string where, std::string todo)
      : Error(std::move(what), std::move(where), std::move(todo), kExitCode) {}
};

// An error that every rank of a job raises alike, agreed over the world (see
// parallel::check_on_every_rank): one rank prints it, without a rank of its own.
class JobError : public Error {
 public:
  explicit JobError(const Error& e) : Error(e.problem(), e.where(), e.todo(), e.exit_code()) {}
  JobError(std::string what, std::string where, std::string todo, int exit_code)
      : Error(std::move(what), std::move(where), std::move(todo), exit_code) {}
};

// A mistake in the command line or the configuration: exit code 2.
class UsageError : public Error {
 public:
  UsageError(std::string what, std::string where, std::string todo)
      : Error(std::move(what), std::move(where), std::move(todo), 2) {}
};

}  // namespace spartan
