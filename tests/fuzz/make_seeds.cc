// Writes the seed corpora of the fuzzers whose inputs are binary (serialized protobuf requests,
// KV chunk streams) into tests/fuzz/corpus/<fuzzer>/: real-looking messages as the client
// library and the workers build them. Run by `tools/fuzz --make-seeds`; the output is committed.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "services/rpc/convert.h"
#include "services/rpc/kv_chunk.h"
#include "sparsefill/kvstore/layout.h"
#include "sparsefill/v1/coordinator.pb.h"

namespace v1 = ::sparsefill::v1;
namespace fs = std::filesystem;
using sparsefill::kvstore::CacheId;
using sparsefill::kvstore::CacheLayout;

namespace {

void Write(const fs::path& dir, const std::string& name, const std::string& bytes) {
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
}

std::string Header(uint8_t a, uint8_t b) { return std::string{char(a), char(b)}; }

void CoordinatorSeeds(const fs::path& dir) {
  // byte 0: method (0 Prefill, 1 StreamCache, 2 FetchBlocks, 3 GetCache, 4 DeleteCache);
  // byte 1: tenant (0 acme, 1 other, 2 none) | 4: use the READY cache's id.
  v1::PrefillRequest p;
  p.set_model("tiny");
  for (int i = 0; i < 64; ++i) p.mutable_tokens()->add_ids((i * 37) % 1000);
  p.set_ttl_seconds(600);
  Write(dir, "prefill_tokens", Header(0, 0) + p.SerializeAsString());
  p.mutable_selection()->set_policy(v1::POLICY_INFLLMV2);
  p.mutable_selection()->set_block_size(16);
  p.mutable_selection()->set_topk(8);
  Write(dir, "prefill_selection", Header(0, 0) + p.SerializeAsString());
  v1::PrefillRequest t;
  t.set_model("tiny");
  t.set_text(
      "It is a truth universally acknowledged, that a single man in possession of a good "
      "fortune, must be in want of a wife.");
  t.set_measure(true);
  Write(dir, "prefill_text", Header(0, 1) + t.SerializeAsString());
  v1::PrefillRequest bad;
  bad.set_model("tiny");
  bad.mutable_tokens()->add_ids(-1);
  bad.set_ttl_seconds(-5);
  Write(dir, "prefill_bad", Header(0, 2) + bad.SerializeAsString());

  v1::StreamCacheRequest s;
  s.set_cache_id(std::string(16, '\x42'));
  Write(dir, "stream", Header(1, 4) + s.SerializeAsString());
  s.set_hot_only(true);
  Write(dir, "stream_hot_other", Header(1, 5) + s.SerializeAsString());

  v1::FetchBlocksRequest f;
  f.set_cache_id(std::string(16, '\x42'));
  for (int layer = 0; layer < 2; ++layer) {
    v1::BlockRange* r = f.add_ranges();
    r->set_layer(layer);
    r->set_kv_head(1);
    r->set_first_block(1);
    r->set_num_blocks(3);
  }
  Write(dir, "fetch", Header(2, 4) + f.SerializeAsString());
  f.mutable_ranges(0)->set_first_block(int64_t{1} << 62);
  Write(dir, "fetch_far", Header(2, 4) + f.SerializeAsString());

  v1::GetCacheRequest g;
  g.set_cache_id(std::string(16, '\x01'));
  Write(dir, "get", Header(3, 4) + g.SerializeAsString());
  v1::DeleteCacheRequest d;
  d.set_cache_id(std::string(16, '\x02'));
  Write(dir, "delete_other", Header(4, 5) + d.SerializeAsString());
}

void KvChunkSeeds(const fs::path& dir) {
  // Layout bytes as kv_chunk_fuzzer reads them, then length-prefixed chunks.
  struct Case {
    const char* name;
    uint8_t dtype, layers, heads, head_dim, block, tokens, flags;
  };
  const Case cases[] = {{"bf16_full", 0, 1, 1, 3, 15, 99, 0},
                        {"f16_partial", 1, 0, 0, 7, 3, 40, 0},
                        {"f32_fixup", 2, 2, 2, 1, 0, 5, 3}};
  const CacheId id{0x0123456789abcdefull, 0xfedcba9876543210ull};
  for (const Case& c : cases) {
    CacheLayout l;
    l.dtype = c.dtype == 0   ? sparsefill::DType::kBF16
              : c.dtype == 1 ? sparsefill::DType::kF16
                             : sparsefill::DType::kF32;
    l.num_layers = 1 + c.layers % 3;
    l.kv_heads = 1 + c.heads % 3;
    l.head_dim = 1 + c.head_dim % 8;
    l.block_size = 1 + c.block % 16;
    l.num_tokens = 1 + c.tokens;
    std::string out{char(c.dtype), char(c.layers), char(c.heads), char(c.head_dim),
                    char(c.block), char(c.tokens), char(c.flags)};
    uint32_t x = 12345;
    for (int32_t layer = 0; layer < l.num_layers; ++layer) {
      for (int32_t h = 0; h < l.kv_heads; ++h) {
        // Runs of up to 3 blocks, hot and cold alternating, as a worker streams them.
        for (int64_t b = 0; b < l.num_blocks(); b += 3) {
          v1::KvChunk k;
          k.set_cache_id(sparsefill::rpc::CacheIdToBytes(id));
          k.set_layer(layer);
          k.set_kv_head(h);
          k.set_first_block(b);
          k.set_hot((b / 3) % 2 == 0);
          k.set_tier(k.hot() ? v1::TIER_DEVICE : v1::TIER_DISK);
          for (int64_t i = b; i < std::min<int64_t>(b + 3, l.num_blocks()); ++i) {
            std::string bytes(l.BlockBytes(i), '\0');
            for (char& ch : bytes) {
              x = x * 1664525u + 1013904223u;
              ch = static_cast<char>(x >> 24);
            }
            sparsefill::rpc::AppendBlock(&k, bytes);
          }
          const std::string s = k.SerializeAsString();
          out += std::string{char(s.size() & 0xff), char(s.size() >> 8)} + s;
        }
      }
    }
    Write(dir, c.name, out);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: fuzz_make_seeds CORPUS_DIR\n";
    return 2;
  }
  const fs::path root = argv[1];
  CoordinatorSeeds(root / "coordinator_request");
  KvChunkSeeds(root / "kv_chunk");
  std::cout << "seeds written under " << root << "\n";
  return 0;
}
