// Child processes of the demo and the integration tests: the real server binaries, started with
// fork/exec on loopback. A server prints "listening on HOST:PORT" on stdout once it serves (port
// 0 lets it pick a free one); WaitForListening reads that line. Every child dies with its parent
// (PR_SET_PDEATHSIG), so a crashed demo or test leaves no server behind.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sparsefill::tools {

struct ChildOptions {
  std::string program;            // path of the executable
  std::vector<std::string> args;  // argv[1..]
  // stderr is appended to this file (kept for error messages); empty: inherited.
  std::string stderr_path;
  // The process group to join; 0: the child leads a new group (whose id is its pid).
  pid_t process_group = 0;
  // Environment entries "NAME=value" that replace or add to the parent's environment.
  std::vector<std::string> env;
};

class ChildProcess {
 public:
  // NotFound when `program` is not an executable file; Internal when fork fails.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Spawn(const ChildOptions& options);
  // SIGKILLs a child that still runs, and reaps it.
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  // The program's file name, for messages.
  const std::string& name() const { return name_; }

  // The address of the first stdout line "listening on ADDR". DeadlineExceeded after `timeout`,
  // Unavailable when the child exits first; both name the program and quote its stderr's tail.
  absl::StatusOr<std::string> WaitForListening(std::chrono::milliseconds timeout);
  // The exit code (128 + signal when a signal ended it) once the child has exited;
  // DeadlineExceeded when it still runs after `timeout`.
  absl::StatusOr<int> Wait(std::chrono::milliseconds timeout);
  bool Running();
  void Signal(int sig);
  // SIGTERM, then SIGKILL when it has not exited within `grace`; reaps it.
  void Stop(std::chrono::milliseconds grace);

  // Everything the child wrote on stdout so far (complete once Wait has returned).
  std::string Stdout();
  // The last `max_bytes` of the stderr file ("" when stderr is inherited).
  std::string StderrTail(size_t max_bytes = 2000) const;

 private:
  ChildProcess() = default;
  void ReadStdout(int fd);
  bool Reap(bool block);

  pid_t pid_ = -1;
  std::string name_;
  std::string stderr_path_;
  bool reaped_ = false;
  int exit_code_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  std::string stdout_;
  bool stdout_closed_ = false;
  std::thread reader_;
};

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it on destruction.
class TempDir {
 public:
  static absl::StatusOr<std::unique_ptr<TempDir>> Create(const std::string& prefix);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  // Removes the directory now (the destructor then does nothing); safe to call twice.
  void Remove();

 private:
  explicit TempDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
  bool removed_ = false;
};

// The directory of the running executable (/proc/self/exe), to find sibling binaries.
absl::StatusOr<std::string> SelfDirectory();

}  // namespace sparsefill::tools
