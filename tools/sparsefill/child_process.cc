#include "tools/sparsefill/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"

extern char** environ;

namespace sparsefill::tools {
namespace {

constexpr char kListening[] = "listening on ";

absl::Status Errno(std::string_view what) {
  return absl::InternalError(absl::StrCat(AsAbsl(what), ": ", std::strerror(errno)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Spawn(const ChildOptions& options) {
  if (::access(options.program.c_str(), X_OK) != 0) {
    return absl::NotFoundError(
        absl::StrCat(options.program, ": not an executable file (", std::strerror(errno), ")"));
  }
  // Everything the child needs is built before fork: between fork and exec only
  // async-signal-safe calls are allowed (gRPC threads may hold locks in the parent).
  std::vector<std::string> argv_storage;
  argv_storage.push_back(options.program);
  argv_storage.insert(argv_storage.end(), options.args.begin(), options.args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  // The parent's environment, less the names `options.env` sets (execve keeps duplicates and
  // getenv would see the parent's first).
  auto name_of = [](std::string_view entry) { return entry.substr(0, entry.find('=')); };
  std::vector<std::string> env_storage;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    bool overridden = false;
    for (const std::string& o : options.env) overridden |= name_of(o) == name_of(*e);
    if (!overridden) env_storage.emplace_back(*e);
  }
  env_storage.insert(env_storage.end(), options.env.begin(), options.env.end());
  std::vector<char*> envp;
  for (std::string& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);

  int err_fd = -1;
  if (!options.stderr_path.empty()) {
    err_fd = ::open(options.stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (err_fd < 0) return Errno(absl::StrCat("cannot open ", options.stderr_path));
  }
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) {
    if (err_fd >= 0) ::close(err_fd);
    return Errno("pipe");
  }
  const pid_t parent = ::getpid();
  const pid_t group = options.process_group;
  const pid_t pid = ::fork();
  if (pid < 0) {
    const absl::Status s = Errno("fork");
    ::close(out[0]);
    ::close(out[1]);
    if (err_fd >= 0) ::close(err_fd);
    return s;
  }
  if (pid == 0) {
    ::setpgid(0, group);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the parent died before prctl took effect
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);  // exec keeps the parent's blocked signals
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGPIPE, SIG_DFL);
    ::dup2(out[1], STDOUT_FILENO);
    if (err_fd >= 0) ::dup2(err_fd, STDERR_FILENO);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  // Both sides set the group, so it is in place whichever runs first.
  ::setpgid(pid, group == 0 ? pid : group);
  ::close(out[1]);
  if (err_fd >= 0) ::close(err_fd);

  std::unique_ptr<ChildProcess> child(new ChildProcess());
  child->pid_ = pid;
  child->name_ = std::filesystem::path(options.program).filename().string();
  child->stderr_path_ = options.stderr_path;
  const int read_fd = out[0];
  child->reader_ = std::thread([c = child.get(), read_fd] { c->ReadStdout(read_fd); });
  return child;
}

void ChildProcess::ReadStdout(int fd) {
  char buf[4096];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    std::lock_guard<std::mutex> lock(mu_);
    stdout_.append(buf, static_cast<size_t>(n));
    cv_.notify_all();
  }
  ::close(fd);
  std::lock_guard<std::mutex> lock(mu_);
  stdout_closed_ = true;
  cv_.notify_all();
}

ChildProcess::~ChildProcess() {
  if (!reaped_) {
    ::kill(pid_, SIGKILL);
    Reap(/*block=*/true);
  }
  // The pipe's write end closes with the child (the servers start no processes of their own).
  if (reader_.joinable()) reader_.join();
}

bool ChildProcess::Reap(bool block) {
  if (reaped_) return true;
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return false;
  reaped_ = true;
  if (r < 0) {
    exit_code_ = -1;  // someone else reaped it; nothing more to learn
  } else if (WIFEXITED(status)) {
    exit_code_ = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    exit_code_ = 128 + WTERMSIG(status);
  }
  return true;
}

bool ChildProcess::Running() { return !Reap(/*block=*/false); }

void ChildProcess::Signal(int sig) {
  if (!reaped_) ::kill(pid_, sig);
}

void ChildProcess::Stop(std::chrono::milliseconds grace) {
  if (reaped_) return;
  ::kill(pid_, SIGTERM);
  if (!Wait(grace).ok()) {
    ::kill(pid_, SIGKILL);
    Reap(/*block=*/true);
  }
}

absl::StatusOr<int> ChildProcess::Wait(std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (!Reap(/*block=*/false)) {
    if (std::chrono::steady_clock::now() >= end) {
      return absl::DeadlineExceededError(
          absl::StrCat(name_, " (pid ", pid_, ") still runs after ", timeout.count(), " ms"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // The pipe closes when the child (and anything it started) is gone: stdout is complete.
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, std::chrono::seconds(2), [&] { return stdout_closed_; });
  return exit_code_;
}

absl::StatusOr<std::string> ChildProcess::WaitForListening(std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    size_t pos = 0;
    while (pos < stdout_.size()) {
      const size_t eol = stdout_.find('\n', pos);
      if (eol == std::string::npos) break;
      const std::string_view line(stdout_.data() + pos, eol - pos);
      if (line.substr(0, sizeof(kListening) - 1) == kListening) {
        std::string address(line.substr(sizeof(kListening) - 1));
        while (!address.empty() && (address.back() == '\r' || address.back() == ' ')) {
          address.pop_back();
        }
        return address;
      }
      pos = eol + 1;
    }
    if (stdout_closed_) {
      lock.unlock();
      (void)Wait(std::chrono::seconds(2));
      return absl::UnavailableError(absl::StrCat(name_, " exited (code ", exit_code_,
                                                 ") before it was listening; stderr:\n",
                                                 StderrTail()));
    }
    if (cv_.wait_until(lock, end) == std::cv_status::timeout &&
        std::chrono::steady_clock::now() >= end) {
      lock.unlock();
      return absl::DeadlineExceededError(
          absl::StrCat(name_, " did not print \"listening on\" within ", timeout.count(),
                       " ms; stderr:\n", StderrTail()));
    }
  }
}

std::string ChildProcess::Stdout() {
  std::lock_guard<std::mutex> lock(mu_);
  return stdout_;
}

std::string ChildProcess::StderrTail(size_t max_bytes) const {
  if (stderr_path_.empty()) return "";
  std::ifstream in(stderr_path_, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff start = size > static_cast<std::streamoff>(max_bytes)
                                   ? size - static_cast<std::streamoff>(max_bytes)
                                   : 0;
  in.seekg(start);
  std::string text(static_cast<size_t>(size - start), '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  return text;
}

absl::StatusOr<std::unique_ptr<TempDir>> TempDir::Create(const std::string& prefix) {
  const char* base = std::getenv("TMPDIR");
  std::string pattern =
      absl::StrCat(base != nullptr && *base != '\0' ? base : "/tmp", "/", prefix, "-XXXXXX");
  if (::mkdtemp(pattern.data()) == nullptr) return Errno(absl::StrCat("mkdtemp ", pattern));
  return std::unique_ptr<TempDir>(new TempDir(pattern));
}

TempDir::~TempDir() { Remove(); }

void TempDir::Remove() {
  if (removed_) return;
  removed_ = true;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

absl::StatusOr<std::string> SelfDirectory() {
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return absl::InternalError(absl::StrCat("/proc/self/exe: ", ec.message()));
  return exe.parent_path().string();
}

}  // namespace sparsefill::tools
