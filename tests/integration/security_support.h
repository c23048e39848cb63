// Pieces of the security integration tests (issue 9 item 5): a second tenant's traffic that
// must stay unaffected while an attack runs, test certificates made by openssl, raw gRPC stubs
// (to send what the client library refuses to), and raw TCP sockets for malformed HTTP/2.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sparsefill/client/types.h"
#include "sparsefill/v1/coordinator.grpc.pb.h"
#include "sparsefill/v1/worker.grpc.pb.h"

namespace sparsefill::integration {

// Tenant tokens of the tests' tokens files (>= 16 characters each).
inline constexpr char kTokenA[] = "sec-tenant-a-7f3c9e21d4b86a05";
inline constexpr char kTokenB[] = "sec-tenant-b-19e0c4d7a2f5b638";
inline constexpr char kTokenMallory[] = "sec-tenant-m-5b2e8f0a6c1d9374";
// Internal identity: the coordinator's and the workers' token towards workers.
inline constexpr char kInternalToken[] = "sec-internal-4e7a1c9f0b3d2865";

// Writes `text` to `path`; false on failure.
bool WriteFile(const std::string& path, const std::string& text);

// Prefill + whole-cache stream + delete of one tenant, in a loop on its own thread, from Start
// until Stop: what "other tenants are unaffected" means in these tests.
class TenantTraffic {
 public:
  TenantTraffic(client::ConnectionOptions connection, std::vector<int32_t> prompt);
  ~TenantTraffic();
  void Start();
  // Waits until at least `min_rounds` rounds that began after Start have ended (up to
  // `timeout`), stops, and returns the first failure: a prefill, stream or delete that did not
  // succeed, a cache that came back incomplete or corrupt, or too few rounds.
  absl::Status Stop(int min_rounds = 1,
                    std::chrono::milliseconds timeout = std::chrono::seconds(90));
  int rounds() const { return rounds_.load(); }

 private:
  void Loop();
  client::ConnectionOptions connection_;
  std::vector<int32_t> prompt_;
  std::atomic<bool> stop_{false};
  std::atomic<int> rounds_{0};
  std::mutex mu_;
  absl::Status first_error_;
  std::thread thread_;
};

// A CA, a server certificate for 127.0.0.1/localhost, a client certificate from that CA, and
// a second, untrusted CA with a "rogue" client certificate, made by openssl in `dir`. File names:
// ca.pem, server.pem/.key, client.pem/.key, other.pem, rogue.pem/.key.
absl::Status MakeTestCertificates(const std::string& dir);

// A raw channel (no bearer interceptor, no size limits beyond `args`) and stubs on it.
std::shared_ptr<grpc::Channel> RawChannel(
    const std::string& address,
    std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials(),
    grpc::ChannelArguments args = {});
// A client context with a deadline of now + `timeout` and, unless empty, this "authorization"
// metadata value (sent verbatim, so malformed values are possible).
std::unique_ptr<grpc::ClientContext> RawContext(const std::string& authorization,
                                                std::chrono::milliseconds timeout);
inline std::string Bearer(const std::string& token) { return "Bearer " + token; }

// Reads a server stream to its end (or `max_messages`), returning the final status.
template <typename Msg>
grpc::Status Drain(grpc::ClientReader<Msg>* reader, int64_t* messages = nullptr) {
  Msg m;
  int64_t n = 0;
  while (reader->Read(&m)) ++n;
  if (messages != nullptr) *messages = n;
  return reader->Finish();
}

// A connected TCP socket to "127.0.0.1:port" (fd; closed by the destructor).
class RawSocket {
 public:
  static absl::StatusOr<std::unique_ptr<RawSocket>> Connect(const std::string& address);
  ~RawSocket();
  // Writes everything; false once the peer closed or reset the connection.
  bool SendAll(const std::string& bytes);
  // True when the peer closed the connection (EOF or reset) within `timeout`; bytes it sent
  // before that are read and dropped.
  bool WaitForClose(std::chrono::milliseconds timeout);
  int fd() const { return fd_; }

 private:
  explicit RawSocket(int fd) : fd_(fd) {}
  int fd_;
};

// HTTP/2 framing for the raw-socket tests (RFC 9113).
inline constexpr char kHttp2Preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
std::string Http2Frame(uint8_t type, uint8_t flags, uint32_t stream, const std::string& payload);
// HPACK literal header field without indexing, new name, no Huffman coding (RFC 7541 6.2.2).
std::string HpackLiteral(const std::string& name, const std::string& value);
// A complete request HEADERS block for a gRPC method on the coordinator.
std::string GrpcRequestHeaders(const std::string& path, const std::string& authority);

}  // namespace sparsefill::integration
