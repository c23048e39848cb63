// Logits of tiny random checkpoints written by Hugging Face transformers equal transformers' own
// logits (fixtures made by tools/fixtures/make_hf_fixtures.py on the GPU machine).
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "sparsefill/engine/engine.h"
#include "tests/testing/compare.h"

namespace sparsefill::engine {
namespace {

std::vector<float> ReadF32(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  const auto size = static_cast<size_t>(in.tellg());
  std::vector<float> v(size / 4);
  in.seekg(0);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(size));
  return v;
}

class HfParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(HfParityTest, LogitsMatchTransformers) {
  const std::string dir = "tests/fixtures/hf/" + GetParam();
  auto engine = Engine::Create(dir, {});
  ASSERT_TRUE(engine.ok()) << engine.status();
  std::ifstream tf(dir + "/tokens.json");
  const std::vector<int32_t> tokens = nlohmann::json::parse(tf).get<std::vector<int32_t>>();
  const std::vector<float> want = ReadF32(dir + "/logits.f32");
  const int64_t vocab = (*engine)->config().vocab_size;
  ASSERT_EQ(want.size(), tokens.size() * static_cast<size_t>(vocab));

  auto plan = (*engine)->Plan(static_cast<int64_t>(tokens.size()), SelectionConfig::Dense());
  ASSERT_TRUE(plan.ok()) << plan.status();
  PrefillOptions opts;
  opts.logits_positions = static_cast<int32_t>(tokens.size());
  auto result = (*engine)->Prefill(*plan, tokens, opts, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  const auto whole = testing::RelativeL2Near(result->logits, want, 1e-4);
  EXPECT_TRUE(whole);
  std::printf("%s: %s\n", GetParam().c_str(), whole.message());
  // Every position, not only the aggregate: the worst row must be close too.
  for (size_t t = 0; t < tokens.size(); ++t) {
    std::span<const float> got(result->logits.data() + t * vocab, static_cast<size_t>(vocab));
    std::span<const float> ref(want.data() + t * vocab, static_cast<size_t>(vocab));
    ASSERT_TRUE(testing::RelativeL2Near(got, ref, 1e-4)) << "position " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(Architectures, HfParityTest,
                         ::testing::Values("qwen3", "qwen2", "llama3"));

}  // namespace
}  // namespace sparsefill::engine
