// Transport security for sparsefill's gRPC servers and channels (DESIGN §7): TLS with server
// certificates, optional mutual TLS, and plaintext for loopback tests and trusted networks.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sparsefill::auth {

enum class TransportSecurity : uint8_t { kInsecure, kTls };
std::string_view TransportSecurityName(TransportSecurity mode);  // "insecure", "tls"

struct ServerSecurityOptions {
  // Default kInsecure: loopback tests only; every deployment should say kTls.
  TransportSecurity mode = TransportSecurity::kInsecure;
  // PEM certificate chain and private key of the server. Required with kTls.
  std::string cert_file;
  std::string key_file;
  // PEM CA bundle. When set, clients must present a certificate signed by it (mutual TLS).
  // Default empty: no client certificate is requested.
  std::string client_ca_file;

  // InvalidArgument naming the field: TLS without cert/key, unreadable or non-PEM files, files set
  // while mode is insecure (a silent plaintext server is a misconfiguration).
  absl::Status Validate() const;
};

struct ChannelSecurityOptions {
  // Default kInsecure: loopback tests only.
  TransportSecurity mode = TransportSecurity::kInsecure;
  // PEM roots that verify the server. Default empty: the system's roots.
  std::string ca_file;
  // Client certificate chain and key for mutual TLS: both or neither. Default: none.
  std::string cert_file;
  std::string key_file;
  // Name checked against the server certificate instead of the address's host. Default empty.
  std::string target_name_override;
  // Bearer tokens over plaintext are refused unless the address is loopback (gRPC refuses call
  // credentials on insecure channels for the same reason). Default false.
  bool allow_token_over_insecure = false;

  absl::Status Validate() const;
};

// Reads a PEM file; InvalidArgument naming `field` and the path when it is missing, unreadable
// or holds no "-----BEGIN" block.
absl::StatusOr<std::string> ReadPemFile(std::string_view path, std::string_view field);

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerSecurityOptions& options);
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const ChannelSecurityOptions& options);

}  // namespace sparsefill::auth
