#include "tools/bench/load/metrics_probe.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace sparsefill::bench {

absl::StatusOr<std::string> MetricsAddress(const std::string& stdout_text) {
  const std::string key = "metrics on ";
  const size_t at = stdout_text.find(key);
  if (at == std::string::npos) return absl::NotFoundError("no \"metrics on\" line");
  const size_t end = stdout_text.find('\n', at);
  return stdout_text.substr(at + key.size(),
                            end == std::string::npos ? end : end - at - key.size());
}

absl::StatusOr<std::map<std::string, double>> ScrapeMetrics(const std::string& address,
                                                            std::chrono::milliseconds timeout) {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port <= 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics address \"", address, "\""));
  }
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, address.substr(0, colon).c_str(), &sa.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("metrics address \"", address, "\": not IPv4"));
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string body;
  absl::Status status = absl::OkStatus();
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof(sa)) != 0) {
    status = absl::UnavailableError(absl::StrCat("connect ", address, ": ", std::strerror(errno)));
  } else {
    const std::string req =
        absl::StrCat("GET /metrics HTTP/1.0\r\nHost: ", address, "\r\nConnection: close\r\n\r\n");
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
      status = absl::UnavailableError(absl::StrCat("send to ", address, " failed"));
    }
    char buf[16384];
    while (status.ok()) {
      if (std::chrono::steady_clock::now() > deadline) {
        status = absl::DeadlineExceededError(absl::StrCat("GET ", address, "/metrics"));
        break;
      }
      const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n == 0) break;
      if (n < 0) {
        if (errno == EINTR) continue;
        status = absl::UnavailableError(absl::StrCat("recv: ", std::strerror(errno)));
        break;
      }
      body.append(buf, static_cast<size_t>(n));
      if (body.size() > (64u << 20)) {
        status = absl::ResourceExhaustedError("metrics page over 64 MiB");
      }
    }
  }
  ::close(fd);
  if (!status.ok()) return status;
  std::map<std::string, double> out;
  std::istringstream in(body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#' || line.find('{') != std::string::npos) continue;
    const size_t sp = line.find(' ');
    if (sp == std::string::npos) continue;
    double v = 0;
    std::string value = line.substr(sp + 1);
    if (!value.empty() && value.back() == '\r') value.pop_back();
    if (absl::SimpleAtod(value, &v)) out[line.substr(0, sp)] = v;
  }
  return out;
}

}  // namespace sparsefill::bench
