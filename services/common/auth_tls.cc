#include "services/common/auth_tls.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"

namespace sparsefill::auth {
namespace {

// PEM files are small; anything larger is not a certificate bundle.
constexpr size_t kMaxPemBytes = 1 << 20;

absl::Status CheckPem(const std::string& path, std::string_view field) {
  return ReadPemFile(path, field).status();
}

absl::Status RequireEmptyWhenInsecure(const std::string& value, std::string_view field) {
  if (value.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(AsAbsl(field), " is set (\"", value,
                                                 "\") but mode is insecure; set mode to tls"));
}

}  // namespace

std::string_view TransportSecurityName(TransportSecurity mode) {
  return mode == TransportSecurity::kTls ? "tls" : "insecure";
}

absl::StatusOr<std::string> ReadPemFile(std::string_view path, std::string_view field) {
  if (path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(AsAbsl(field), ": no file given"));
  }
  std::ifstream in{std::string(path), std::ios::binary};
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(AsAbsl(field), ": cannot open \"", AsAbsl(path), "\""));
  }
  std::ostringstream buf;
  buf << in.rdbuf();
  std::string text = std::move(buf).str();
  if (text.size() > kMaxPemBytes) {
    return absl::InvalidArgumentError(absl::StrCat(AsAbsl(field), ": \"", AsAbsl(path),
                                                   "\" is larger than ", kMaxPemBytes, " bytes"));
  }
  if (text.find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(AsAbsl(field), ": \"", AsAbsl(path), "\" holds no PEM block"));
  }
  return text;
}

absl::Status ServerSecurityOptions::Validate() const {
  if (mode == TransportSecurity::kInsecure) {
    SF_RETURN_IF_ERROR(RequireEmptyWhenInsecure(cert_file, "cert_file"));
    SF_RETURN_IF_ERROR(RequireEmptyWhenInsecure(key_file, "key_file"));
    return RequireEmptyWhenInsecure(client_ca_file, "client_ca_file");
  }
  SF_RETURN_IF_ERROR(CheckPem(cert_file, "cert_file"));
  SF_RETURN_IF_ERROR(CheckPem(key_file, "key_file"));
  if (!client_ca_file.empty()) SF_RETURN_IF_ERROR(CheckPem(client_ca_file, "client_ca_file"));
  return absl::OkStatus();
}

absl::Status ChannelSecurityOptions::Validate() const {
  if (mode == TransportSecurity::kInsecure) {
    SF_RETURN_IF_ERROR(RequireEmptyWhenInsecure(ca_file, "ca_file"));
    SF_RETURN_IF_ERROR(RequireEmptyWhenInsecure(cert_file, "cert_file"));
    SF_RETURN_IF_ERROR(RequireEmptyWhenInsecure(key_file, "key_file"));
    return RequireEmptyWhenInsecure(target_name_override, "target_name_override");
  }
  if (!ca_file.empty()) SF_RETURN_IF_ERROR(CheckPem(ca_file, "ca_file"));
  if (cert_file.empty() != key_file.empty()) {
    return absl::InvalidArgumentError("cert_file and key_file: give both (mutual TLS) or neither");
  }
  if (!cert_file.empty()) {
    SF_RETURN_IF_ERROR(CheckPem(cert_file, "cert_file"));
    SF_RETURN_IF_ERROR(CheckPem(key_file, "key_file"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerSecurityOptions& options) {
  SF_RETURN_IF_ERROR(options.Validate());
  if (options.mode == TransportSecurity::kInsecure) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions ssl(
      options.client_ca_file.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                     : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  SF_ASSIGN_OR_RETURN(pair.cert_chain, ReadPemFile(options.cert_file, "cert_file"));
  SF_ASSIGN_OR_RETURN(pair.private_key, ReadPemFile(options.key_file, "key_file"));
  ssl.pem_key_cert_pairs.push_back(std::move(pair));
  if (!options.client_ca_file.empty()) {
    SF_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPemFile(options.client_ca_file, "client_ca_file"));
  }
  return grpc::SslServerCredentials(ssl);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const ChannelSecurityOptions& options) {
  SF_RETURN_IF_ERROR(options.Validate());
  if (options.mode == TransportSecurity::kInsecure) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  if (!options.ca_file.empty()) {
    SF_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPemFile(options.ca_file, "ca_file"));
  }
  if (!options.cert_file.empty()) {
    SF_ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadPemFile(options.cert_file, "cert_file"));
    SF_ASSIGN_OR_RETURN(ssl.pem_private_key, ReadPemFile(options.key_file, "key_file"));
  }
  return grpc::SslCredentials(ssl);
}

}  // namespace sparsefill::auth
