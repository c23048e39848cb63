// Plain types of the coordinator API as the client library presents them: no gRPC or protobuf
// types (DESIGN §2), so tools and decode nodes depend only on public headers.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "sparsefill/engine/selection.h"
#include "sparsefill/kvstore/layout.h"

namespace sparsefill::client {

enum class Security : uint8_t { kInsecure, kTls };

struct ConnectionOptions {
  // host:port (or a gRPC target such as "dns:///coordinator:50051"). Required.
  std::string address;
  // Default kInsecure: loopback only; deployments use kTls.
  Security security = Security::kInsecure;
  // TLS: PEM roots that verify the server (default empty: the system's roots); a client
  // certificate and key for mutual TLS (both or neither); a name to check instead of the host.
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
  std::string target_name_override;
  // Bearer token sent as "authorization: Bearer <token>" on every call. Default empty: none.
  std::string token;
  // Tokens go in plaintext only to loopback addresses unless this is set. Default false.
  bool allow_token_over_insecure = false;
  // Deadline of every call that does not pass its own timeout. Default 60 s.
  std::chrono::milliseconds default_timeout{std::chrono::seconds(60)};
  // Largest message received (KV chunks are >= 1 MiB). Default 64 MiB.
  int max_message_bytes = 64 << 20;
  // StreamCache asks for a direct plan: a READY cache is then streamed shard by shard straight
  // from its workers (the coordinator still authenticates the call, checks the tenant and hands
  // out one single-use ticket per shard; the bearer token never goes to a worker). What a direct
  // stream fails to deliver comes through the coordinator's relay (FetchBlocks) while the
  // deadline allows. Caches still being computed are always relayed. Default true.
  bool direct_streams = true;
  // Direct streams use this connection's TLS settings (ca_file, client certificate); this name is
  // checked against the workers' certificates instead of their host. Default empty.
  std::string worker_target_name_override;

  absl::Status Validate() const;  // InvalidArgument naming the field
};

struct CallOptions {
  // This call's deadline is now + timeout; zero: the connection's default_timeout.
  std::chrono::milliseconds timeout{0};
};

// Unset fields keep the policy's defaults; the server validates the result (INVALID_ARGUMENT
// names the field).
struct SelectionOverrides {
  std::optional<engine::Policy> policy;  // nullopt: the model's default
  std::optional<int32_t> block_size;
  std::optional<int32_t> kernel_size;
  std::optional<int32_t> kernel_stride;
  std::optional<int32_t> init_blocks;
  std::optional<int32_t> local_tokens;
  std::optional<int32_t> topk;
  std::optional<int64_t> dense_below;
  std::optional<float> lambda;
  std::optional<int32_t> nosa_query_aware;
  std::optional<int32_t> nosa_observe;
};

struct PrefillRequest {
  std::string model;
  // Exactly one of the two: token ids, or text tokenized by the server with the checkpoint's
  // tokenizer.json.
  std::vector<int32_t> tokens;
  std::string text;
  SelectionOverrides selection;
  bool measure = false;     // also report quality against dense attention
  int64_t ttl_seconds = 0;  // 0: the server's default
  // measure: the information loss over a stratified sample of this many query positions; -1:
  // every query; 0: the server's default (1024). PrefillStats::information_loss_queries says how
  // many it was.
  int32_t information_loss_queries = 0;
};

enum class CacheState : uint8_t { kUnspecified, kPending, kReady, kFailed };
std::string_view CacheStateName(CacheState state);  // "unspecified", "pending", ...

struct CacheInfo {
  kvstore::CacheId id;
  std::string model;
  CacheState state = CacheState::kUnspecified;
  kvstore::CacheLayout layout;
  int64_t created_unix_ms = 0;
  int64_t expires_unix_ms = 0;
  int32_t layers_ready = 0;
  int64_t hot_blocks = 0;
  int64_t cold_blocks = 0;
  uint64_t bytes = 0;
  std::string policy;
};

struct LayerStats {
  int32_t layer = 0;
  int64_t selected_keys = 0;
  int64_t causal_keys = 0;
  double information_loss = -1;  // -1 when not measured
};

struct PrefillStats {
  int64_t num_tokens = 0;
  double seconds = 0;
  double tokens_per_second = 0;
  double sparsity = 0;
  int64_t selected_keys = 0;
  int64_t causal_keys = 0;
  std::vector<LayerStats> layers;
  double information_loss = -1;  // -1 when not measured (also the next two)
  double hidden_rel_l2 = -1;
  double next_token_kl = -1;
  // Query positions information_loss was measured on (all heads, every layer): num_tokens when
  // every query was; 0 when not measured or not reported.
  int64_t information_loss_queries = 0;
  int32_t workers = 0;
  int64_t hot_blocks = 0;
  int64_t cold_blocks = 0;
  std::string policy;
};

// One progress event of a running prefill.
struct PrefillProgress {
  enum class Kind : uint8_t { kAdmitted, kLayerDone };
  Kind kind = Kind::kAdmitted;
  // kAdmitted: the cache id (PENDING until done) and the plan.
  kvstore::CacheId cache;
  int64_t num_tokens = 0;
  int32_t workers = 0;
  int32_t num_layers = 0;
  // kLayerDone
  int32_t layer = 0;
  int32_t layers_total = 0;
};

struct PrefillResult {
  CacheInfo cache;
  PrefillStats stats;
};

struct BlockRange {
  int32_t layer = 0;
  int32_t kv_head = 0;
  int64_t first_block = 0;
  int32_t num_blocks = 0;
};

// A verified run of blocks of one (layer, KV head): for each block K [tokens, head_dim] then V,
// in the layout's dtype. `data` is valid only during the callback.
struct KvChunk {
  kvstore::CacheId cache;
  int32_t layer = 0;
  int32_t kv_head = 0;
  int64_t first_block = 0;
  int32_t num_blocks = 0;
  std::optional<kvstore::Tier> tier;  // where the server read the blocks from, when it said
  bool hot = false;
  std::vector<uint64_t> xxh64;  // one per block, already checked
  // Valid during the callback only: the bytes as gRPC received them when they lie in one piece,
  // else one copy in a buffer the stream reuses (checksums are verified on the received bytes).
  std::string_view data;
};

struct StreamStats {
  int64_t chunks = 0;
  int64_t blocks = 0;
  uint64_t bytes = 0;
  // StreamCache only: blocks that came straight from the workers (a direct plan), and shards
  // whose direct stream failed so that their missing blocks came through the relay.
  int64_t direct_blocks = 0;
  int32_t relayed_shards = 0;
};

struct ModelInfo {
  std::string name;
  std::string architecture;
  int32_t num_layers = 0;
  int32_t q_heads = 0;
  int32_t kv_heads = 0;
  int32_t head_dim = 0;
  int64_t vocab_size = 0;
  int64_t max_tokens = 0;
  bool has_tokenizer = false;
  std::optional<engine::Policy> default_policy;
};

}  // namespace sparsefill::client
