#include <algorithm>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "services/engine/model/safetensors_format.h"
#include "sparsefill/common/rng.h"
#include "sparsefill/engine/checkpoint.h"
#include "tests/testing/compare.h"
#include "tests/unit/model/model_test_util.h"

namespace sparsefill::engine {
namespace {

namespace fs = std::filesystem;
using testing::ReadBytes;
using testing::SmallConfig;
using testing::WriteRandomCheckpoint;

void ExpectSameTensors(const Checkpoint& cp, const std::vector<TensorToWrite>& want) {
  for (const TensorToWrite& t : want) {
    auto v = cp.Tensor(t.name);
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_EQ(v->dtype, t.dtype) << t.name;
    EXPECT_EQ(v->shape, t.shape) << t.name;
    ASSERT_EQ(v->nbytes, t.data.size()) << t.name;
    EXPECT_EQ(std::memcmp(v->data, t.data.data(), t.data.size()), 0) << t.name;
    // The engine's path: data aligned for its element type and convertible.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v->data) % DTypeSize(t.dtype), 0u) << t.name;
  }
}

TEST(Safetensors, RoundTripIsBitExactForEveryDType) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(seed);
  Rng rng(seed);
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    SCOPED_TRACE(DTypeName(dtype));
    const std::string dir = sparsefill::testing::MakeTempDir("sf-roundtrip");
    const ModelConfig config = SmallConfig(Architecture::kQwen3, dtype);
    const auto tensors = WriteRandomCheckpoint(dir, config, rng);
    auto cp = Checkpoint::Open(dir);
    ASSERT_TRUE(cp.ok()) << cp.status();
    EXPECT_EQ((*cp)->config(), config);
    ExpectSameTensors(**cp, tensors);
    EXPECT_EQ((*cp)->TensorNamesInFiles().size(), tensors.size());

    // fp32 values survive ConvertToF32 exactly.
    auto emb = (*cp)->Tensor(TensorNames::Embedding());
    ASSERT_TRUE(emb.ok());
    std::vector<float> a(static_cast<size_t>(emb->numel())), b(a.size());
    ConvertToF32(emb->data, emb->dtype, a.data(), a.size());
    ConvertToF32(tensors[0].data.data(), dtype, b.data(), b.size());
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0);

    // The header is what safetensors readers expect.
    const std::string bytes = ReadBytes(dir + "/model.safetensors");
    auto layout = model_internal::ParseSafetensors(reinterpret_cast<const uint8_t*>(bytes.data()),
                                                   bytes.size(), "model.safetensors");
    ASSERT_TRUE(layout.ok()) << layout.status();
    EXPECT_EQ(layout->data_offset % 8, 0u);
    EXPECT_EQ(layout->metadata.at("format"), "pt");
    EXPECT_EQ(layout->tensors.size(), tensors.size());
    uint64_t end = 0;
    for (const auto& t : layout->tensors) end = std::max(end, t.end);
    EXPECT_EQ(layout->data_bytes, end);  // no trailing garbage
    fs::remove_all(dir);
  }
}

TEST(Safetensors, StreamingOutputIndependentOfThreadsAndChunks) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(seed);
  Rng rng(seed);
  const std::string dir = sparsefill::testing::MakeTempDir("sf-stream");
  const ModelConfig config = SmallConfig(Architecture::kQwen2, DType::kBF16);
  std::vector<TensorToWrite> tensors;
  for (const TensorSpec& s : ExpectedTensors(config)) {
    tensors.push_back(TensorToWrite{s.name, s.dtype, s.shape, testing::RandomTensorBytes(s, rng)});
  }
  ASSERT_TRUE(WriteSafetensors(dir + "/ref.safetensors", tensors).ok());
  const std::string ref = ReadBytes(dir + "/ref.safetensors");

  auto fill = [&](const TensorSpec& spec, int64_t first, int64_t count, void* out) {
    for (const TensorToWrite& t : tensors) {
      if (t.name == spec.name) {
        std::memcpy(out, t.data.data() + first * 2, static_cast<size_t>(count) * 2);
        return absl::OkStatus();
      }
    }
    return absl::NotFoundError(spec.name);
  };
  std::vector<TensorSpec> specs = ExpectedTensors(config);
  for (int threads : {1, 2, 5}) {
    for (uint64_t chunk : {2ull, 6ull, 100ull, 4096ull, 8ull << 20}) {
      SafetensorsWriteOptions o;
      o.threads = threads;
      o.chunk_bytes = chunk;
      const std::string path = dir + "/s.safetensors";
      ASSERT_TRUE(WriteSafetensors(path, specs, fill, o).ok());
      EXPECT_EQ(ReadBytes(path), ref) << "threads " << threads << " chunk " << chunk;
    }
  }
  fs::remove_all(dir);
}

TEST(Safetensors, FillErrorLeavesNoFile) {
  const std::string dir = sparsefill::testing::MakeTempDir("sf-fillerr");
  const std::vector<TensorSpec> specs = {{"a", DType::kF32, {1000}}, {"b", DType::kF32, {1000}}};
  auto fill = [](const TensorSpec& spec, int64_t first, int64_t count, void* out) {
    if (spec.name == "b" && first >= 500) return absl::DataLossError("disk of dreams");
    std::memset(out, 0x3f, static_cast<size_t>(count) * 4);
    return absl::OkStatus();
  };
  SafetensorsWriteOptions o;
  o.threads = 3;
  o.chunk_bytes = 400;
  const std::string path = dir + "/x.safetensors";
  absl::Status s = WriteSafetensors(path, specs, fill, o);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(std::string(s.message()).find("\"b\""), std::string::npos) << s;
  EXPECT_NE(std::string(s.message()).find(path), std::string::npos) << s;
  EXPECT_TRUE(fs::is_empty(dir));  // neither the file nor its temp
  fs::remove_all(dir);
}

TEST(Safetensors, WriterRejectsBadSpecs) {
  const std::string dir = sparsefill::testing::MakeTempDir("sf-badspec");
  auto none = [](const TensorSpec&, int64_t, int64_t, void*) { return absl::OkStatus(); };
  EXPECT_EQ(
      WriteSafetensors(dir + "/a", {{"x", DType::kF32, {2}}, {"x", DType::kF32, {2}}}, none).code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteSafetensors(dir + "/a", {{"x", DType::kF32, {-2}}}, none).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteSafetensors(dir + "/a", {{"__metadata__", DType::kF32, {2}}}, none).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteSafetensors(dir + "/a", {{"bad\xff\xfe", DType::kF32, {2}}}, none).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteSafetensors(dir + "/a", {TensorToWrite{"x", DType::kF16, {3}, {1, 2}}}).code(),
            absl::StatusCode::kInvalidArgument);
  fs::remove_all(dir);
}

TEST(Safetensors, ShardedCheckpointThroughIndex) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(seed);
  Rng rng(seed);
  const std::string dir = sparsefill::testing::MakeTempDir("sf-sharded");
  const ModelConfig config = SmallConfig(Architecture::kLlama, DType::kF16);
  std::vector<TensorToWrite> tensors;
  std::vector<TensorSpec> specs = ExpectedTensors(config);
  for (const TensorSpec& s : specs) {
    tensors.push_back(TensorToWrite{s.name, s.dtype, s.shape, testing::RandomTensorBytes(s, rng)});
  }
  auto fill = [&](const TensorSpec& spec, int64_t first, int64_t count, void* out) {
    for (const TensorToWrite& t : tensors) {
      if (t.name == spec.name) {
        std::memcpy(out, t.data.data() + first * 2, static_cast<size_t>(count) * 2);
        return absl::OkStatus();
      }
    }
    return absl::NotFoundError(spec.name);
  };
  testing::WriteText(dir + "/config.json", ModelConfigToJson(config));

  const ShardPlan plan = PlanShards(specs, 8000);
  ASSERT_TRUE(plan.sharded());
  for (const auto& shard : plan.shards) {
    // Only a tensor larger than the limit may exceed it, alone.
    EXPECT_TRUE(shard.data_bytes <= 8000 || shard.tensors.size() == 1) << shard.file_name;
  }
  auto files = WriteCheckpointTensors(dir, specs, fill, 8000);
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(files->size(), plan.shards.size() + 1);
  EXPECT_TRUE(fs::exists(dir + "/model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(dir + "/model-00001-of-" +
                         std::string(5 - std::to_string(plan.shards.size()).size(), '0') +
                         std::to_string(plan.shards.size()) + ".safetensors"));
  {
    auto cp = Checkpoint::Open(dir);
    ASSERT_TRUE(cp.ok()) << cp.status();
    EXPECT_EQ((*cp)->Files().size(), plan.shards.size());
    ExpectSameTensors(**cp, tensors);
  }

  // Rewriting unsharded replaces the shards and the index.
  auto single = WriteCheckpointTensors(dir, specs, fill, uint64_t{1} << 30);
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ(single->size(), 1u);
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors.index.json"));
  int weight_files = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    weight_files += e.path().extension() == ".safetensors";
  }
  EXPECT_EQ(weight_files, 1);
  auto cp = Checkpoint::Open(dir);
  ASSERT_TRUE(cp.ok()) << cp.status();
  ExpectSameTensors(**cp, tensors);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace sparsefill::engine
