// make-model: writes a deterministic synthetic Hugging Face checkpoint (config.json,
// model*.safetensors [+ index], tokenizer.json) for a named shape.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "sparsefill/engine/checkpoint.h"
#include "sparsefill/engine/synthetic_checkpoint.h"

namespace {

namespace fs = std::filesystem;
namespace sf = sparsefill;
namespace eng = sparsefill::engine;

constexpr char kUsage[] =
    "usage: make-model --out DIR [--shape tiny|qwen3-0.6b|qwen3-8b|llama3-8b|minicpm4-8b]\n"
    "                  [--dtype bf16|fp16|fp32] [--seed N] [--layers N]\n"
    "                  [--tokenizer PATH|none] [--max-shard-bytes B[K|M|G]] [--threads N]\n"
    "                  [--dry-run]\n"
    "Writes a deterministic synthetic checkpoint (same arguments -> byte-identical files).\n"
    "  --shape            model shape (default tiny)\n"
    "  --dtype            weight dtype (default: the shape's, bf16)\n"
    "  --seed             weight seed (default 0)\n"
    "  --layers           override the layer count (quick tests)\n"
    "  --tokenizer        tokenizer.json to copy (default: $SPARSEFILL_SHARED_DATA or\n"
    "                     ../shared/data, qwen3-tokenizer/tokenizer.json, when it exists and\n"
    "                     its ids fit the vocabulary); none: no tokenizer\n"
    "  --max-shard-bytes  shard above this many bytes (default 4G)\n"
    "  --threads          generation threads (default: all cores; never changes the output)\n"
    "  --dry-run          print the config and the files it would write, write nothing\n";

int Fail(const std::string& msg) {
  std::fprintf(stderr, "make-model: %s\n", msg.c_str());
  return 2;
}

bool ParseU64(std::string_view s, uint64_t* out) {
  if (s.empty()) return false;
  uint64_t mult = 1;
  const char last = s.back();
  if (last == 'K' || last == 'k') mult = uint64_t{1} << 10;
  if (last == 'M' || last == 'm') mult = uint64_t{1} << 20;
  if (last == 'G' || last == 'g') mult = uint64_t{1} << 30;
  if (mult != 1) s.remove_suffix(1);
  if (s.empty()) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, c - '0', &v)) return false;
  }
  if (__builtin_mul_overflow(v, mult, &v)) return false;
  *out = v;
  return true;
}

std::string HumanBytes(uint64_t b) {
  char buf[64];
  if (b >= (uint64_t{1} << 30)) {
    std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(b) / (1 << 30));
  } else if (b >= (uint64_t{1} << 20)) {
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(b) / (1 << 20));
  } else {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(b));
  }
  return buf;
}

std::string DefaultTokenizer() {
  fs::path data = "../shared/data";
  if (const char* env = std::getenv("SPARSEFILL_SHARED_DATA"); env != nullptr && *env != '\0') {
    data = env;
  }
  return (data / "qwen3-tokenizer" / "tokenizer.json").string();
}

void PrintConfig(const eng::ModelConfig& c) {
  std::printf(
      "shape: %s (%s), %d layers, hidden %lld, heads %d/%d, head_dim %d, "
      "intermediate %lld, vocab %lld, %s, %s embeddings\n",
      std::string(eng::ArchitectureName(c.arch)).c_str(), c.model_type.c_str(), c.num_layers,
      static_cast<long long>(c.hidden_size), c.num_heads, c.num_kv_heads, c.head_dim,
      static_cast<long long>(c.intermediate_size), static_cast<long long>(c.vocab_size),
      std::string(sf::DTypeName(c.dtype)).c_str(), c.tie_word_embeddings ? "tied" : "untied");
  std::printf("params: %.3f B total, %.3f B non-embedding\n",
              static_cast<double>(c.TotalParams()) * 1e-9,
              static_cast<double>(c.NonEmbeddingParams()) * 1e-9);
}

}  // namespace

int main(int argc, char** argv) {
  std::string shape = "tiny";
  std::string out;
  std::string tokenizer;
  bool tokenizer_given = false;
  bool dry_run = false;
  eng::SyntheticCheckpointOptions options;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    auto value = [&](std::string_view* v) {
      if (i + 1 >= argc) return false;
      *v = argv[++i];
      return true;
    };
    std::string_view v;
    uint64_t n = 0;
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (arg == "--dry-run") {
      dry_run = true;
    } else if (arg == "--shape") {
      if (!value(&v)) return Fail("--shape needs a value");
      shape = v;
    } else if (arg == "--out") {
      if (!value(&v)) return Fail("--out needs a value");
      out = v;
    } else if (arg == "--dtype") {
      if (!value(&v)) return Fail("--dtype needs a value");
      if (v == "bf16") {
        options.dtype = sf::DType::kBF16;
      } else if (v == "fp16") {
        options.dtype = sf::DType::kF16;
      } else if (v == "fp32") {
        options.dtype = sf::DType::kF32;
      } else {
        return Fail("--dtype must be bf16, fp16 or fp32, got \"" + std::string(v) + "\"");
      }
    } else if (arg == "--seed") {
      if (!value(&v) || !ParseU64(v, &options.seed)) return Fail("--seed needs an integer");
    } else if (arg == "--layers") {
      if (!value(&v) || !ParseU64(v, &n) || n == 0 || n > 4096) {
        return Fail("--layers needs an integer in [1, 4096]");
      }
      options.layers = static_cast<int32_t>(n);
    } else if (arg == "--threads") {
      if (!value(&v) || !ParseU64(v, &n) || n > 1024) {
        return Fail("--threads needs an integer in [0, 1024]");
      }
      options.threads = static_cast<int>(n);
    } else if (arg == "--max-shard-bytes") {
      if (!value(&v) || !ParseU64(v, &options.max_shard_bytes) || options.max_shard_bytes == 0) {
        return Fail("--max-shard-bytes needs a positive integer (optionally K, M or G)");
      }
    } else if (arg == "--tokenizer") {
      if (!value(&v)) return Fail("--tokenizer needs a value");
      tokenizer = v;
      tokenizer_given = true;
    } else {
      std::fputs(kUsage, stderr);
      return Fail("unknown argument \"" + std::string(arg) + "\"");
    }
  }
  if (out.empty() && !dry_run) {
    std::fputs(kUsage, stderr);
    return Fail("--out DIR is required");
  }

  auto base = eng::SyntheticModelConfig(shape);
  if (!base.ok()) return Fail(std::string(base.status().message()));
  const eng::ModelConfig config = eng::ApplySyntheticOverrides(*base, options);

  if (tokenizer_given && tokenizer != "none") {
    options.tokenizer_path = tokenizer;
    options.tokenizer_required = true;
  } else if (!tokenizer_given) {
    options.tokenizer_path = DefaultTokenizer();  // used only when present and fitting
  }

  PrintConfig(config);
  const std::vector<eng::TensorSpec> specs = eng::ExpectedTensors(config);
  const eng::ShardPlan plan = eng::PlanShards(specs, options.max_shard_bytes);
  if (dry_run) {
    std::printf("would write %zu tensors, %s in %zu file(s)%s:\n", specs.size(),
                HumanBytes(plan.total_bytes).c_str(), plan.shards.size(),
                plan.sharded() ? " + model.safetensors.index.json" : "");
    for (const auto& s : plan.shards) {
      std::printf("  %s  %zu tensors  %s\n", s.file_name.c_str(), s.tensors.size(),
                  HumanBytes(s.data_bytes).c_str());
    }
    std::printf("  config.json\n");
    return 0;
  }

  const auto start = std::chrono::steady_clock::now();
  auto result = eng::WriteSyntheticCheckpoint(out, *base, options);
  if (!result.ok()) return Fail(std::string(result.status().message()));
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("wrote %s (%zu tensors, %s of weights in %.2f s, %.0f MiB/s):\n", out.c_str(),
              specs.size(), HumanBytes(result->tensor_bytes).c_str(), secs,
              static_cast<double>(result->tensor_bytes) / (1 << 20) / std::max(secs, 1e-9));
  for (const std::string& f : result->files) {
    std::error_code ec;
    const auto size = fs::file_size(f, ec);
    std::printf("  %s  %s\n", f.c_str(), ec ? "?" : HumanBytes(size).c_str());
  }
  std::printf("%s\n", result->tokenizer_note.c_str());
  return 0;
}
