#include "tests/integration/security_support.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "sparsefill/client/coordinator_client.h"
#include "sparsefill/common/status.h"
#include "tests/integration/harness.h"

namespace sparsefill::integration {

bool WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  return static_cast<bool>(out);
}

TenantTraffic::TenantTraffic(client::ConnectionOptions connection, std::vector<int32_t> prompt)
    : connection_(std::move(connection)), prompt_(std::move(prompt)) {}

TenantTraffic::~TenantTraffic() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

void TenantTraffic::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void TenantTraffic::Loop() {
  auto fail = [&](const absl::Status& s) {
    std::lock_guard<std::mutex> lock(mu_);
    if (first_error_.ok()) first_error_ = s;
    stop_.store(true);
  };
  absl::StatusOr<std::unique_ptr<client::CoordinatorClient>> c =
      client::CoordinatorClient::Connect(connection_);
  if (!c.ok()) return fail(c.status());
  while (!stop_.load()) {
    client::PrefillRequest r;
    r.model = "tiny";
    r.tokens = prompt_;
    absl::StatusOr<client::PrefillResult> made = (*c)->Prefill(r);
    if (!made.ok()) {
      return fail(absl::Status(made.status().code(),
                               absl::StrCat("other tenant's Prefill: ", made.status().message())));
    }
    absl::StatusOr<StreamedCache> got = StreamWholeCache(**c, made->cache.id);
    if (!got.ok()) {
      return fail(absl::Status(got.status().code(), absl::StrCat("other tenant's StreamCache: ",
                                                                 got.status().message())));
    }
    if (got->verified != got->info.layout.total_blocks()) {
      return fail(
          absl::DataLossError(absl::StrCat("other tenant's cache: ", got->verified, " of ",
                                           got->info.layout.total_blocks(), " blocks verified")));
    }
    if (absl::Status s = (*c)->DeleteCache(made->cache.id); !s.ok()) {
      return fail(
          absl::Status(s.code(), absl::StrCat("other tenant's DeleteCache: ", s.message())));
    }
    rounds_.fetch_add(1);
  }
}

absl::Status TenantTraffic::Stop(int min_rounds, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (rounds_.load() < min_rounds && !stop_.load() && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  if (!first_error_.ok()) return first_error_;
  if (rounds_.load() < min_rounds) {
    return absl::DeadlineExceededError(
        absl::StrCat("other tenant completed ", rounds_.load(), " rounds, expected ", min_rounds));
  }
  return absl::OkStatus();
}

absl::Status MakeTestCertificates(const std::string& d) {
  if (!WriteFile(d + "/server.ext", "subjectAltName=IP:127.0.0.1,DNS:localhost\n") ||
      !WriteFile(d + "/client.ext", "extendedKeyUsage=clientAuth\n")) {
    return absl::InternalError(absl::StrCat("cannot write to ", d));
  }
  // P-256 keys: fast to generate, accepted by gRPC's TLS stack.
  const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  const std::string script =
      "set -e; cd '" + d + "'; " + "openssl req -x509 " + key +
      " -keyout ca.key -out ca.pem -days 1 -subj /CN=sf-sec-ca; " + "openssl req -x509 " + key +
      " -keyout other.key -out other.pem -days 1 -subj /CN=other; " + "openssl req " + key +
      " -keyout server.key -out server.csr -subj /CN=localhost; " +
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
      "-out server.pem -days 1 -extfile server.ext; " +
      "openssl req " + key + " -keyout client.key -out client.csr -subj /CN=sf-client; " +
      "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
      "-out client.pem -days 1 -extfile client.ext; " +
      "openssl req " + key + " -keyout rogue.key -out rogue.csr -subj /CN=rogue; " +
      "openssl x509 -req -in rogue.csr -CA other.pem -CAkey other.key -CAcreateserial "
      "-out rogue.pem -days 1 -extfile client.ext";
  const std::string cmd = "bash -c \"" + script + "\" >'" + d + "/openssl.log' 2>&1";
  if (std::system(cmd.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("openssl failed; see ", d, "/openssl.log"));
  }
  return absl::OkStatus();
}

std::shared_ptr<grpc::Channel> RawChannel(const std::string& address,
                                          std::shared_ptr<grpc::ChannelCredentials> creds,
                                          grpc::ChannelArguments args) {
  // A fresh connection per raw channel: an attack must not share its transport with the
  // traffic it should not disturb.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(address, std::move(creds), args);
}

std::unique_ptr<grpc::ClientContext> RawContext(const std::string& authorization,
                                                std::chrono::milliseconds timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  if (!authorization.empty()) ctx->AddMetadata("authorization", authorization);
  return ctx;
}

absl::StatusOr<std::unique_ptr<RawSocket>> RawSocket::Connect(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return absl::InvalidArgumentError("address: no port");
  const int port = std::atoi(address.c_str() + colon + 1);
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError("socket() failed");
  std::unique_ptr<RawSocket> s(new RawSocket(fd));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    return absl::UnavailableError(absl::StrCat("connect to ", address, ": errno ", errno));
  }
  return s;
}

RawSocket::~RawSocket() {
  if (fd_ >= 0) ::close(fd_);
}

bool RawSocket::SendAll(const std::string& bytes) {
  size_t at = 0;
  while (at < bytes.size()) {
    const ssize_t n = ::send(fd_, bytes.data() + at, bytes.size() - at, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    at += static_cast<size_t>(n);
  }
  return true;
}

bool RawSocket::WaitForClose(std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  char buf[16384];
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n == 0) return true;                   // orderly close
    if (n < 0 && errno != EINTR) return true;  // reset
  }
}

std::string Http2Frame(uint8_t type, uint8_t flags, uint32_t stream, const std::string& payload) {
  std::string f;
  const uint32_t len = static_cast<uint32_t>(payload.size());
  f.push_back(static_cast<char>((len >> 16) & 0xff));
  f.push_back(static_cast<char>((len >> 8) & 0xff));
  f.push_back(static_cast<char>(len & 0xff));
  f.push_back(static_cast<char>(type));
  f.push_back(static_cast<char>(flags));
  for (int shift = 24; shift >= 0; shift -= 8) {
    f.push_back(static_cast<char>((stream >> shift) & (shift == 24 ? 0x7f : 0xff)));
  }
  f.append(payload);
  return f;
}

namespace {

// RFC 7541 5.1, with a 7-bit prefix and the H bit clear.
std::string HpackLength(size_t n) {
  std::string out;
  if (n < 127) {
    out.push_back(static_cast<char>(n));
    return out;
  }
  out.push_back(static_cast<char>(127));
  n -= 127;
  while (n >= 128) {
    out.push_back(static_cast<char>((n % 128) | 0x80));
    n /= 128;
  }
  out.push_back(static_cast<char>(n));
  return out;
}

}  // namespace

std::string HpackLiteral(const std::string& name, const std::string& value) {
  std::string out;
  out.push_back('\0');
  out.append(HpackLength(name.size())).append(name);
  out.append(HpackLength(value.size())).append(value);
  return out;
}

std::string GrpcRequestHeaders(const std::string& path, const std::string& authority) {
  const std::pair<std::string, std::string> fields[] = {{":method", "POST"},
                                                        {":scheme", "http"},
                                                        {":path", path},
                                                        {":authority", authority},
                                                        {"content-type", "application/grpc"},
                                                        {"te", "trailers"}};
  std::string out;
  for (const auto& [name, value] : fields) out.append(HpackLiteral(name, value));
  return out;
}

}  // namespace sparsefill::integration
