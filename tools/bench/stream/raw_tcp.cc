#include "tools/bench/stream/raw_tcp.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"

namespace sparsefill::bench {
namespace {

absl::Status Errno(std::string_view what) {
  return absl::InternalError(
      absl::StrCat("raw tcp: ", std::string(what), ": ", std::strerror(errno)));
}

// Closes its descriptor on every path out.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { Reset(); }
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept {
    Reset();
    fd_ = o.fd_;
    o.fd_ = -1;
    return *this;
  }
  int get() const { return fd_; }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

struct Pair {
  Fd sender, receiver;
};

absl::StatusOr<std::vector<Pair>> Connect(int n) {
  Fd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (listener.get() < 0) return Errno("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Errno("bind 127.0.0.1:0");
  }
  if (::listen(listener.get(), n) != 0) return Errno("listen");
  socklen_t len = sizeof(addr);
  if (::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return Errno("getsockname");
  }
  std::vector<Pair> pairs(static_cast<size_t>(n));
  for (Pair& p : pairs) {
    p.sender = Fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (p.sender.get() < 0) return Errno("socket");
    if (::connect(p.sender.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      return Errno("connect");
    }
    p.receiver = Fd(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (p.receiver.get() < 0) return Errno("accept");
    // gRPC sets TCP_NODELAY on its sockets too; with large writes it changes nothing.
    const int one = 1;
    ::setsockopt(p.sender.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  return pairs;
}

absl::Status SendBuffer(int fd, const char* data, size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Errno("send");
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
  return absl::OkStatus();
}

absl::Status SendAll(int fd, uint64_t bytes, const std::vector<char>& buffer) {
  uint64_t left = bytes;
  while (left > 0) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(left, buffer.size()));
    if (absl::Status s = SendBuffer(fd, buffer.data(), n); !s.ok()) return s;
    left -= n;
  }
  ::shutdown(fd, SHUT_WR);
  return absl::OkStatus();
}

// read() of the whole file, each piece sent as it was read.
absl::Status SendFile(int fd, const std::string& path, std::vector<char>& buffer) {
  Fd file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (file.get() < 0) return Errno(absl::StrCat("open ", path));
  while (true) {
    const ssize_t r = ::read(file.get(), buffer.data(), buffer.size());
    if (r < 0) {
      if (errno == EINTR) continue;
      return Errno(absl::StrCat("read ", path));
    }
    if (r == 0) break;
    if (absl::Status s = SendBuffer(fd, buffer.data(), static_cast<size_t>(r)); !s.ok()) return s;
  }
  ::shutdown(fd, SHUT_WR);
  return absl::OkStatus();
}

absl::Status ReceiveAll(int fd, uint64_t bytes, std::vector<char>& buffer) {
  uint64_t got = 0;
  while (true) {
    const ssize_t r = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return Errno("recv");
    }
    if (r == 0) break;
    got += static_cast<uint64_t>(r);
  }
  if (got != bytes) {
    return absl::DataLossError(absl::StrCat("raw tcp: received ", got, " of ", bytes, " bytes"));
  }
  return absl::OkStatus();
}

}  // namespace

double ProcessCpuSeconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  auto s = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec * 1e-6; };
  return s(u.ru_utime) + s(u.ru_stime);
}

namespace {

// Runs one sender (`send(i, fd, buffer)`) and one receiver per connection at once.
template <typename Send>
absl::StatusOr<RawTcpResult> RunCopy(int connections, uint64_t bytes_per_connection,
                                     size_t buffer_bytes, Send send) {
  if (connections < 1 || buffer_bytes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("raw tcp: ", connections, " connections of ", buffer_bytes, "-byte buffers"));
  }
  absl::StatusOr<std::vector<Pair>> pairs = Connect(connections);
  if (!pairs.ok()) return pairs.status();
  const size_t n = pairs->size();
  std::vector<absl::Status> send_status(n), recv_status(n);
  std::vector<std::thread> threads;
  // Buffers are touched before the clock starts so first-use page faults are not measured.
  std::vector<std::vector<char>> send_buf(n, std::vector<char>(buffer_bytes, 'x'));
  std::vector<std::vector<char>> recv_buf(n, std::vector<char>(buffer_bytes, 0));
  const double cpu0 = ProcessCpuSeconds();
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      recv_status[i] = ReceiveAll((*pairs)[i].receiver.get(), bytes_per_connection, recv_buf[i]);
    });
    threads.emplace_back([&, i] { send_status[i] = send((*pairs)[i].sender.get(), send_buf[i]); });
  }
  for (std::thread& t : threads) t.join();
  RawTcpResult r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.cpu_seconds = ProcessCpuSeconds() - cpu0;
  r.connections = connections;
  r.bytes = bytes_per_connection * n;
  for (size_t i = 0; i < n; ++i) {
    if (!send_status[i].ok()) return send_status[i];
    if (!recv_status[i].ok()) return recv_status[i];
  }
  return r;
}

}  // namespace

absl::StatusOr<RawTcpResult> RunRawTcpCopy(int connections, uint64_t bytes_per_connection,
                                           size_t buffer_bytes) {
  return RunCopy(
      connections, bytes_per_connection, buffer_bytes,
      [&](int fd, std::vector<char>& buffer) { return SendAll(fd, bytes_per_connection, buffer); });
}

absl::StatusOr<RawTcpResult> RunRawTcpFileCopy(int connections, const std::string& path,
                                               size_t buffer_bytes) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return Errno(absl::StrCat("stat ", path));
  return RunCopy(connections, static_cast<uint64_t>(st.st_size), buffer_bytes,
                 [&](int fd, std::vector<char>& buffer) { return SendFile(fd, path, buffer); });
}

}  // namespace sparsefill::bench
