// Checkpoint::Open on real transformers output and on every kind of malformed input.
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "sparsefill/common/rng.h"
#include "sparsefill/engine/checkpoint.h"
#include "tests/testing/compare.h"
#include "tests/unit/model/model_test_util.h"

namespace sparsefill::engine {
namespace {

namespace fs = std::filesystem;
using testing::RawSafetensors;
using testing::ReadBytes;
using testing::SmallConfig;
using testing::WriteRandomCheckpoint;
using testing::WriteText;

TEST(Checkpoint, OpensTransformersFixtures) {
  const fs::path root = "tests/fixtures/hf";
  if (!fs::exists(root)) GTEST_SKIP() << "no tests/fixtures/hf (made by tools/fixtures)";
  struct Case {
    const char* name;
    Architecture arch;
    bool tied;
  };
  for (const Case& c :
       {Case{"qwen3", Architecture::kQwen3, false}, Case{"qwen2", Architecture::kQwen2, false},
        Case{"llama3", Architecture::kLlama, true}}) {
    SCOPED_TRACE(c.name);
    auto cp = Checkpoint::Open((root / c.name).string());
    ASSERT_TRUE(cp.ok()) << cp.status();
    const ModelConfig& config = (*cp)->config();
    EXPECT_EQ(config.arch, c.arch);
    EXPECT_EQ(config.dtype, DType::kF32);
    EXPECT_EQ(config.tie_word_embeddings, c.tied);
    EXPECT_EQ((*cp)->Tensor(TensorNames::LmHead()).ok(), !c.tied);
    auto q = (*cp)->Tensor(TensorNames::Layer(1, "self_attn.q_proj.weight"));
    ASSERT_TRUE(q.ok()) << q.status();
    EXPECT_EQ(q->shape, (std::vector<int64_t>{config.q_dim(), config.hidden_size}));
    EXPECT_EQ((*cp)->Tensor("nope").status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ((*cp)->TokenizerPath(), "");
  }
}

class CheckpointErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = sparsefill::testing::FreshSeed();
    dir_ = sparsefill::testing::MakeTempDir("ckpt-bad");
    config_ = SmallConfig();
    WriteText(dir_ + "/config.json", ModelConfigToJson(config_));
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  // Open fails with InvalidArgument whose message names `file` and, when given, `tensor`.
  void ExpectInvalid(const std::string& file, const std::string& tensor,
                     const std::string& also = "") {
    auto cp = Checkpoint::Open(dir_);
    ASSERT_FALSE(cp.ok());
    const std::string msg(cp.status().message());
    EXPECT_EQ(cp.status().code(), absl::StatusCode::kInvalidArgument) << msg;
    EXPECT_NE(msg.find(file), std::string::npos) << "file " << file << " not in: " << msg;
    if (!tensor.empty()) {
      EXPECT_NE(msg.find("\"" + tensor + "\""), std::string::npos)
          << "tensor " << tensor << " not in: " << msg;
    }
    if (!also.empty()) {
      EXPECT_NE(msg.find(also), std::string::npos) << msg;
    }
  }

  void WriteModel(const std::string& header, size_t data_bytes, int64_t length_override = -1) {
    WriteText(Path("model.safetensors"), RawSafetensors(header, data_bytes, length_override));
  }

  uint64_t seed_ = 0;
  std::string dir_;
  ModelConfig config_;
};

TEST_F(CheckpointErrors, FileShorterThanLengthField) {
  WriteText(Path("model.safetensors"), "abc");
  ExpectInvalid(Path("model.safetensors"), "", "truncated");
}

TEST_F(CheckpointErrors, FileShorterThanHeader) {
  WriteModel(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 0, 1000);
  ExpectInvalid(Path("model.safetensors"), "", "truncated");
}

TEST_F(CheckpointErrors, AbsurdHeaderLength) {
  WriteModel("{}", 16, int64_t{1} << 62);
  ExpectInvalid(Path("model.safetensors"), "", "absurd");
}

TEST_F(CheckpointErrors, HeaderIsNotJson) {
  WriteModel(R"({"a": {"dtype": "F32", "shape": [1], "data_off)", 4);
  ExpectInvalid(Path("model.safetensors"), "", "JSON");
}

TEST_F(CheckpointErrors, HeaderEntryIsNotAnObject) {
  WriteModel(R"({"model.norm.weight": [1, 2]})", 4);
  ExpectInvalid(Path("model.safetensors"), "model.norm.weight");
}

TEST_F(CheckpointErrors, UnknownDType) {
  WriteModel(R"({"model.norm.weight": {"dtype": "Q4_K", "shape": [32], "data_offsets": [0, 64]}})",
             64);
  ExpectInvalid(Path("model.safetensors"), "model.norm.weight", "Q4_K");
}

TEST_F(CheckpointErrors, UnsupportedDType) {
  WriteModel(R"({"model.norm.weight": {"dtype": "I64", "shape": [8], "data_offsets": [0, 64]}})",
             64);
  ExpectInvalid(Path("model.safetensors"), "model.norm.weight", "I64");
}

TEST_F(CheckpointErrors, NegativeShape) {
  WriteModel(
      R"({"model.norm.weight": {"dtype": "F32", "shape": [-4, 8], "data_offsets": [0, 64]}})", 64);
  ExpectInvalid(Path("model.safetensors"), "model.norm.weight", "shape");
}

TEST_F(CheckpointErrors, ShapeProductOverflows) {
  WriteModel(R"({"model.norm.weight": {"dtype": "BF16", "shape": [4294967296, 4294967296, 16],
                 "data_offsets": [0, 64]}})",
             64);
  ExpectInvalid(Path("model.safetensors"), "model.norm.weight", "shape");
}

TEST_F(CheckpointErrors, ByteSizeDisagreesWithShape) {
  WriteModel(R"({"model.norm.weight": {"dtype": "F32", "shape": [32], "data_offsets": [0, 64]}})",
             128);
  ExpectInvalid(Path("model.safetensors"), "model.norm.weight", "needs 128");
}

TEST_F(CheckpointErrors, OffsetsBeyondDataSection) {
  WriteModel(R"({"model.norm.weight": {"dtype": "F32", "shape": [32], "data_offsets": [64, 192]}})",
             128);
  ExpectInvalid(Path("model.safetensors"), "model.norm.weight", "beyond");
}

TEST_F(CheckpointErrors, OffsetsReversed) {
  WriteModel(R"({"model.norm.weight": {"dtype": "F32", "shape": [0], "data_offsets": [64, 0]}})",
             128);
  ExpectInvalid(Path("model.safetensors"), "model.norm.weight");
}

TEST_F(CheckpointErrors, OverlappingTensors) {
  WriteModel(R"({"model.a": {"dtype": "F32", "shape": [16], "data_offsets": [0, 64]},
                 "model.b": {"dtype": "F32", "shape": [16], "data_offsets": [32, 96]}})",
             96);
  ExpectInvalid(Path("model.safetensors"), "model.b", "overlap");
}

TEST_F(CheckpointErrors, TruncatedDataSection) {
  Rng rng(seed_);
  WriteRandomCheckpoint(dir_, config_, rng);
  const std::string bytes = ReadBytes(Path("model.safetensors"));
  WriteText(Path("model.safetensors"), bytes.substr(0, bytes.size() - 3));
  // The last tensor written is the LM head (untied).
  ExpectInvalid(Path("model.safetensors"), TensorNames::LmHead(), "beyond");
}

TEST_F(CheckpointErrors, MissingTensor) {
  Rng rng(seed_);
  std::vector<TensorToWrite> tensors;
  const std::string dropped = TensorNames::Layer(1, "self_attn.k_norm.weight");
  for (const TensorSpec& s : ExpectedTensors(config_)) {
    if (s.name == dropped) continue;
    tensors.push_back({s.name, s.dtype, s.shape, testing::RandomTensorBytes(s, rng)});
  }
  ASSERT_TRUE(WriteSafetensors(Path("model.safetensors"), tensors).ok());
  ExpectInvalid(Path("model.safetensors"), dropped, "missing");
}

TEST_F(CheckpointErrors, ShapeDisagreesWithConfig) {
  Rng rng(seed_);
  WriteRandomCheckpoint(dir_, config_, rng);
  ModelConfig other = config_;
  other.intermediate_size += 16;
  WriteText(Path("config.json"), ModelConfigToJson(other));
  ExpectInvalid(Path("model.safetensors"), TensorNames::Layer(0, "mlp.gate_proj.weight"),
                "shape [48, 32]");
}

TEST_F(CheckpointErrors, DTypeDisagreesWithConfig) {
  Rng rng(seed_);
  WriteRandomCheckpoint(dir_, config_, rng);
  ModelConfig other = config_;
  other.dtype = DType::kF16;
  WriteText(Path("config.json"), ModelConfigToJson(other));
  ExpectInvalid(Path("model.safetensors"), TensorNames::Embedding(), "dtype BF16");
}

TEST_F(CheckpointErrors, TiedConfigStillRejectsWrongLayerShapes) {
  Rng rng(seed_);
  ModelConfig tied = config_;
  tied.tie_word_embeddings = true;
  tied.num_kv_heads = 4;  // k/v are now [32, 32]; the file has [16, 32]
  std::vector<TensorToWrite> tensors;
  for (const TensorSpec& s : ExpectedTensors(config_)) {
    tensors.push_back({s.name, s.dtype, s.shape, testing::RandomTensorBytes(s, rng)});
  }
  ASSERT_TRUE(WriteSafetensors(Path("model.safetensors"), tensors).ok());
  WriteText(Path("config.json"), ModelConfigToJson(tied));
  ExpectInvalid(Path("model.safetensors"), TensorNames::Layer(0, "self_attn.k_proj.weight"));
}

TEST_F(CheckpointErrors, UnknownArchitecture) {
  Rng rng(seed_);
  WriteRandomCheckpoint(dir_, config_, rng);
  nlohmann::json j = nlohmann::json::parse(ModelConfigToJson(config_));
  j["architectures"] = {"MistralForCausalLM"};
  WriteText(Path("config.json"), j.dump());
  ExpectInvalid(Path("config.json"), "", "MistralForCausalLM");
}

TEST_F(CheckpointErrors, ConfigIsNotJson) {
  WriteText(Path("config.json"), "{\"architectures\": [");
  ExpectInvalid(Path("config.json"), "", "JSON");
}

TEST_F(CheckpointErrors, MissingConfig) {
  fs::remove(Path("config.json"));
  ExpectInvalid(Path("config.json"), "", "missing");
}

TEST_F(CheckpointErrors, NoWeights) { ExpectInvalid(dir_, "", "model.safetensors"); }

TEST(Checkpoint, MissingDirectoryIsNotFound) {
  auto cp = Checkpoint::Open("/nonexistent/sparsefill/ckpt");
  EXPECT_EQ(cp.status().code(), absl::StatusCode::kNotFound);
}

// ---- Sharded checkpoints.

class ShardedErrors : public CheckpointErrors {
 protected:
  void SetUp() override {
    CheckpointErrors::SetUp();
    Rng rng(seed_);
    specs_ = ExpectedTensors(config_);
    for (const TensorSpec& s : specs_) {
      tensors_.push_back({s.name, s.dtype, s.shape, testing::RandomTensorBytes(s, rng)});
    }
    auto fill = [this](const TensorSpec& spec, int64_t first, int64_t count, void* out) {
      for (const TensorToWrite& t : tensors_) {
        if (t.name == spec.name) {
          std::memcpy(out, t.data.data() + first * 2, static_cast<size_t>(count) * 2);
        }
      }
      return absl::OkStatus();
    };
    auto files = WriteCheckpointTensors(dir_, specs_, fill, 6000);
    ASSERT_TRUE(files.ok()) << files.status();
    ASSERT_GE(files->size(), 3u);
    ASSERT_TRUE(Checkpoint::Open(dir_).ok());
    index_ = nlohmann::json::parse(ReadBytes(Path("model.safetensors.index.json")));
  }
  void WriteIndex() { WriteText(Path("model.safetensors.index.json"), index_.dump(1)); }

  std::vector<TensorSpec> specs_;
  std::vector<TensorToWrite> tensors_;
  nlohmann::json index_;
};

TEST_F(ShardedErrors, IndexNamesMissingFile) {
  index_["weight_map"][TensorNames::FinalNorm()] = "model-00042-of-00042.safetensors";
  WriteIndex();
  ExpectInvalid(Path("model.safetensors.index.json"), TensorNames::FinalNorm(),
                "model-00042-of-00042.safetensors");
}

TEST_F(ShardedErrors, IndexNamesTensorNotInThatFile) {
  const std::string first = index_["weight_map"][TensorNames::Embedding()];
  const std::string norm = TensorNames::FinalNorm();
  ASSERT_NE(index_["weight_map"][norm].get<std::string>(), first);
  index_["weight_map"][norm] = first;
  WriteIndex();
  ExpectInvalid(Path("model.safetensors.index.json"), norm, first);
}

TEST_F(ShardedErrors, IndexNamesUnknownTensor) {
  index_["weight_map"]["model.layers.7.ghost.weight"] =
      index_["weight_map"][TensorNames::Embedding()];
  WriteIndex();
  ExpectInvalid(Path("model.safetensors.index.json"), "model.layers.7.ghost.weight");
}

TEST_F(ShardedErrors, IndexEscapesDirectory) {
  index_["weight_map"][TensorNames::FinalNorm()] = "../elsewhere.safetensors";
  WriteIndex();
  ExpectInvalid(Path("model.safetensors.index.json"), TensorNames::FinalNorm(), "plain file name");
}

TEST_F(ShardedErrors, IndexIsNotJson) {
  WriteText(Path("model.safetensors.index.json"), "{\"weight_map\": {");
  ExpectInvalid(Path("model.safetensors.index.json"), "", "JSON");
}

TEST_F(ShardedErrors, DuplicateTensorAcrossShards) {
  // Put the embedding into a second shard as well.
  const std::string emb_file = index_["weight_map"][TensorNames::Embedding()];
  const std::string norm_file = index_["weight_map"][TensorNames::FinalNorm()];
  ASSERT_NE(emb_file, norm_file);
  std::vector<TensorToWrite> shard;
  for (const TensorToWrite& t : tensors_) {
    if (index_["weight_map"][t.name] == norm_file || t.name == TensorNames::Embedding()) {
      shard.push_back(t);
    }
  }
  ASSERT_TRUE(WriteSafetensors(Path(norm_file), shard).ok());
  ExpectInvalid(norm_file, TensorNames::Embedding(), "duplicate");
}

// ---- Robustness: cut or corrupted files never crash and never pass as valid when cut.

TEST_F(CheckpointErrors, TruncationsAndCorruptionsNeverCrash) {
  SCOPED_TRACE(seed_);
  Rng rng(seed_);
  WriteRandomCheckpoint(dir_, config_, rng);
  const std::string good = ReadBytes(Path("model.safetensors"));
  uint64_t header = 0;
  for (int i = 7; i >= 0; --i) header = (header << 8) | static_cast<uint8_t>(good[i]);
  ASSERT_LT(header + 8, good.size());

  std::vector<size_t> cuts;
  for (size_t n = 0; n < 8 + header + 16; n += 1 + rng.NextU64() % 7) cuts.push_back(n);
  for (int i = 0; i < 40; ++i) cuts.push_back(static_cast<size_t>(rng.NextU64() % good.size()));
  for (size_t n : cuts) {
    WriteText(Path("model.safetensors"), good.substr(0, n));
    auto cp = Checkpoint::Open(dir_);
    ASSERT_FALSE(cp.ok()) << "cut at " << n;
    ASSERT_EQ(cp.status().code(), absl::StatusCode::kInvalidArgument) << cp.status();
  }
  for (int i = 0; i < 150; ++i) {
    std::string bad = good;
    const int flips = 1 + static_cast<int>(rng.NextU64() % 3);
    for (int f = 0; f < flips; ++f) {
      const size_t at = rng.NextU64() % (8 + header);
      bad[at] = static_cast<char>(rng.NextU64() & 0xff);
    }
    WriteText(Path("model.safetensors"), bad);
    auto cp = Checkpoint::Open(dir_);
    if (!cp.ok()) {
      ASSERT_EQ(cp.status().code(), absl::StatusCode::kInvalidArgument) << cp.status();
    }
  }
}

}  // namespace
}  // namespace sparsefill::engine
