#include "services/metrics/exposer.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "sparsefill/common/status.h"

namespace sparsefill::metrics {
namespace {

using Clock = std::chrono::steady_clock;

std::string Response(std::string_view status, std::string_view extra_headers,
                     std::string_view content_type, std::string_view body, bool head_only) {
  std::string out =
      absl::StrCat("HTTP/1.1 ", AsAbsl(status), "\r\nContent-Type: ", AsAbsl(content_type),
                   "\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n",
                   AsAbsl(extra_headers), "\r\n");
  if (!head_only) out.append(body);
  return out;
}

std::string PlainError(std::string_view status, std::string_view extra_headers = "") {
  return Response(status, extra_headers, "text/plain; charset=utf-8",
                  absl::StrCat(AsAbsl(status), "\n"), /*head_only=*/false);
}

struct Conn {
  int fd = -1;
  std::string in;
  std::string out;
  size_t sent = 0;
  bool responding = false;
  bool draining = false;  // response sent, write side shut: reading to EOF so close sends no RST
  Clock::time_point deadline;
};

void CloseConn(Conn& c) {
  if (c.fd >= 0) ::close(c.fd);
  c.fd = -1;
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsExposer>> MetricsExposer::Start(
    std::string_view address, std::shared_ptr<prometheus::Registry> registry,
    ExposerLimits limits) {
  if (registry == nullptr) return absl::InvalidArgumentError("metrics registry: null");
  if (limits.max_connections < 1 || limits.max_request_bytes < 64 ||
      limits.connection_timeout_ms < 1) {
    return absl::InvalidArgumentError(
        "metrics exposer limits: max_connections >= 1, max_request_bytes >= 64 and "
        "connection_timeout_ms >= 1");
  }
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(AsAbsl(address.substr(colon + 1)), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--metrics-listen: \"", AsAbsl(address),
                                                   "\" is not HOST:PORT with a port in 0..65535"));
  }
  std::string host(address.substr(0, colon));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string port_text = std::to_string(port);
  if (const int rc = ::getaddrinfo(host.c_str(), port_text.c_str(), &hints, &found); rc != 0) {
    return absl::InvalidArgumentError(absl::StrCat("--metrics-listen ", AsAbsl(address),
                                                   ": cannot resolve host \"", host,
                                                   "\": ", ::gai_strerror(rc)));
  }
  std::unique_ptr<MetricsExposer> e(new MetricsExposer());
  e->registry_ = std::move(registry);
  e->limits_ = limits;
  std::string last_error = "no address";
  for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    const int fd =
        ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last_error = std::strerror(errno);
      continue;
    }
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, 64) != 0) {
      last_error = std::strerror(errno);
      ::close(fd);
      continue;
    }
    e->listen_fd_ = fd;
    break;
  }
  ::freeaddrinfo(found);
  if (e->listen_fd_ < 0) {
    return absl::UnavailableError(
        absl::StrCat("--metrics-listen ", AsAbsl(address), ": cannot listen: ", last_error));
  }
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  if (::getsockname(e->listen_fd_, reinterpret_cast<sockaddr*>(&bound), &len) != 0) {
    return absl::UnavailableError(absl::StrCat("--metrics-listen ", AsAbsl(address),
                                               ": getsockname: ", std::strerror(errno)));
  }
  e->port_ = bound.ss_family == AF_INET6
                 ? ntohs(reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port)
                 : ntohs(reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);
  e->wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (e->wake_fd_ < 0) {
    return absl::UnavailableError(
        absl::StrCat("--metrics-listen ", AsAbsl(address), ": eventfd: ", std::strerror(errno)));
  }
  e->address_ = absl::StrCat(AsAbsl(address.substr(0, colon)), ":", e->port_);
  e->thread_ = std::thread([raw = e.get()] { raw->Loop(); });
  return e;
}

MetricsExposer::~MetricsExposer() {
  if (thread_.joinable()) {
    const uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(wake_fd_, &one, sizeof(one));
    thread_.join();
  }
  if (listen_fd_ >= 0) ::close(listen_fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

// What a complete request (request line + headers) gets; `is_scrape` when it is a served GET.
std::string MetricsExposer::Render(std::string_view request, bool* is_scrape) const {
  *is_scrape = false;
  const size_t eol = request.find('\n');
  std::string_view line = request.substr(0, eol);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  const std::vector<absl::string_view> parts = absl::StrSplit(AsAbsl(line), ' ');
  if (parts.size() != 3 || parts[1].empty() || !absl::StartsWith(parts[2], "HTTP/1.")) {
    return PlainError("400 Bad Request");
  }
  const absl::string_view method = parts[0];
  absl::string_view path = parts[1];
  path = path.substr(0, path.find('?'));
  if (path != "/metrics") return PlainError("404 Not Found");
  const bool head = method == "HEAD";
  if (method != "GET" && !head) return PlainError("405 Method Not Allowed", "Allow: GET, HEAD\r\n");
  const std::string body = prometheus::TextSerializer().Serialize(registry_->Collect());
  *is_scrape = !head;
  return Response("200 OK", "", "text/plain; version=0.0.4; charset=utf-8", body, head);
}

void MetricsExposer::Loop() {
  std::vector<Conn> conns;
  struct CloseAll {
    std::vector<Conn>* conns;
    ~CloseAll() {
      for (Conn& c : *conns) CloseConn(c);
    }
  } close_all{&conns};
  std::vector<pollfd> fds;
  Clock::time_point accept_paused_until{};
  while (true) {
    const Clock::time_point now = Clock::now();
    // Drop what is finished or past its deadline.
    for (Conn& c : conns) {
      if (c.fd >= 0 && now >= c.deadline) CloseConn(c);
    }
    conns.erase(std::remove_if(conns.begin(), conns.end(), [](const Conn& c) { return c.fd < 0; }),
                conns.end());

    fds.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    const bool accepting = now >= accept_paused_until;
    fds.push_back({accepting ? listen_fd_ : -1, POLLIN, 0});
    Clock::time_point next = accepting ? Clock::time_point::max() : accept_paused_until;
    for (const Conn& c : conns) {
      fds.push_back({c.fd, static_cast<short>(c.responding && !c.draining ? POLLOUT : POLLIN), 0});
      next = std::min(next, c.deadline);
    }
    int timeout_ms = -1;
    if (next != Clock::time_point::max()) {
      timeout_ms = static_cast<int>(std::max<int64_t>(
          0, std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count() + 1));
    }
    if (::poll(fds.data(), fds.size(), timeout_ms) < 0) {
      if (errno == EINTR) continue;
      return;  // cannot happen with valid fds; the endpoint stops rather than spin
    }
    if (fds[0].revents != 0) return;  // the destructor's wake-up

    for (size_t i = 0; i < conns.size(); ++i) {
      Conn& c = conns[i];
      const short revents = fds[i + 2].revents;
      if (revents == 0) continue;
      if (c.draining) {
        char sink[4096];
        const ssize_t n = ::recv(c.fd, sink, sizeof(sink), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
          CloseConn(c);
        }
        continue;
      }
      if (!c.responding) {
        char buf[2048];
        const size_t room = limits_.max_request_bytes + 1 - c.in.size();
        const ssize_t n = ::recv(c.fd, buf, std::min(sizeof(buf), room), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
          CloseConn(c);
          continue;
        }
        if (n > 0) c.in.append(buf, static_cast<size_t>(n));
        size_t end = c.in.find("\r\n\r\n");
        if (end == std::string::npos) end = c.in.find("\n\n");  // bare-LF clients
        if (end != std::string::npos && end < limits_.max_request_bytes) {
          bool scrape = false;
          c.out = Render(c.in, &scrape);
          if (scrape) scrapes_.fetch_add(1, std::memory_order_relaxed);
          c.responding = true;
        } else if (c.in.size() > limits_.max_request_bytes) {
          c.out = PlainError("431 Request Header Fields Too Large");
          c.responding = true;
        }
        if (!c.responding) continue;
      }
      // Write as much as the socket takes now; the rest when poll says it can take more.
      while (c.sent < c.out.size()) {
        const ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
        if (n > 0) {
          c.sent += static_cast<size_t>(n);
          continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) break;
        CloseConn(c);
        break;
      }
      if (c.fd >= 0 && c.sent == c.out.size()) {
        // Closing with unread request bytes would reset the connection and could destroy the
        // response before the client reads it: shut the write side and read to EOF first
        // (bounded by the deadline, at most a second more).
        ::shutdown(c.fd, SHUT_WR);
        c.draining = true;
        c.deadline = std::min(c.deadline, Clock::now() + std::chrono::seconds(1));
      }
    }

    if (accepting && fds[1].revents != 0) {
      while (true) {
        const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
          if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            accept_paused_until = Clock::now() + std::chrono::milliseconds(100);
          }
          break;
        }
        if (static_cast<int>(conns.size()) >= limits_.max_connections) {
          ::close(fd);  // over the limit: refused at once rather than queued behind the others
          continue;
        }
        Conn c;
        c.fd = fd;
        c.deadline = Clock::now() + std::chrono::milliseconds(limits_.connection_timeout_ms);
        conns.push_back(std::move(c));
      }
    }
  }
}

}  // namespace sparsefill::metrics
