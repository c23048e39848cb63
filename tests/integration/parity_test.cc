// The decode sink's next-token distribution, after a prefill sharded over 1, 2 or 4 worker
// processes and streamed through the coordinator, equals the single-process engine's bit for
// bit (Engine::Prefill with a sink collecting K/V in the cache's dtype, then Engine::Decode).
// dense_below is lowered so that the sparse (PHSA) path runs on a few-thousand-token prompt.
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "sparsefill/engine/engine.h"
#include "tests/integration/harness.h"
#include "tools/decode-sink/local_reference.h"

namespace sparsefill::integration {
namespace {

constexpr size_t kPromptTokens = 3000;
constexpr int64_t kDenseBelow = 1024;

std::vector<float> ReadProbs(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<float> p(bytes.size() / sizeof(float));
  std::memcpy(p.data(), bytes.data(), p.size() * sizeof(float));
  return p;
}

class ParityTest : public ::testing::TestWithParam<int32_t> {};

TEST_P(ParityTest, DecodeSinkEqualsSingleProcessEngine) {
  const int32_t workers = GetParam();
  auto tokens = NovelTokens(kPromptTokens + 1);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  const int32_t next_token = tokens->back();  // the text's own next token
  tokens->pop_back();

  // The single-process reference, computed here (not by the sink under test).
  auto model = TinyModel(2);
  ASSERT_TRUE(model.ok()) << model.status();
  auto engine = engine::Engine::Create(*model, {});
  ASSERT_TRUE(engine.ok()) << engine.status();
  tools::SelectionChoice choice;
  choice.policy = engine::Policy::kPhsa;
  choice.dense_below = kDenseBelow;
  auto selection = choice.ToConfig((*engine)->config());
  ASSERT_TRUE(selection.ok()) << selection.status();
  auto ref = tools::RunLocalReference(**engine, *selection, *tokens, (*engine)->config().dtype,
                                      next_token);
  ASSERT_TRUE(ref.ok()) << ref.status();
  ASSERT_FALSE(ref->prefill.plan.dense) << "the sparse path must run";
  ASSERT_GT(ref->prefill.sparsity, 0.1);
  const std::vector<float> expected = tools::Softmax(ref->logits);

  auto cluster = StartCluster(Spec(workers, 2));
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  TestCluster& c = **cluster;
  auto tokens_file = WriteTokens(c.dir->path(), "prompt", *tokens);
  ASSERT_TRUE(tokens_file.ok()) << tokens_file.status();
  const std::string probs_file = c.dir->path() + "/probs.f32";
  std::vector<std::string> args = {"--coordinator", c->coordinator_address(),
                                   "--model",       *model,
                                   "--tokens",      *tokens_file,
                                   "--policy",      "phsa",
                                   "--dense-below", std::to_string(kDenseBelow),
                                   "--next-token",  std::to_string(next_token),
                                   "--dump-probs",  probs_file,
                                   "--json",        "--quiet"};
  // The sink's own comparison is exercised once; every worker count is checked against the
  // reference above.
  if (workers == 2) args.push_back("--verify-against-local");
  auto sink = c->Spawn("decode-sink", args, "decode-sink");
  ASSERT_TRUE(sink.ok()) << sink.status();
  auto code = (*sink)->Wait(std::chrono::seconds(120));
  ASSERT_TRUE(code.ok()) << code.status();
  ASSERT_EQ(*code, 0) << c->LogTail("decode-sink") << "\ncoordinator:\n"
                      << c->LogTail("coordinator");

  const nlohmann::json out =
      nlohmann::json::parse((*sink)->Stdout(), nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(out.is_object()) << (*sink)->Stdout();
  EXPECT_EQ(out["prefill"]["workers"].get<int>(), workers);
  EXPECT_EQ(out["tokens"].get<int64_t>(), static_cast<int64_t>(kPromptTokens));
  EXPECT_NEAR(out["prefill"]["sparsity"].get<double>(), ref->prefill.sparsity, 1e-12);
  const int64_t total_blocks = out["layout"]["total_blocks"].get<int64_t>();
  EXPECT_EQ(out["stream"]["checksums_verified"].get<int64_t>(), total_blocks);
  EXPECT_EQ(out["stream"]["checksum_failures"].get<int64_t>(), 0);
  EXPECT_EQ(
      out["stream"]["hot_blocks"].get<int64_t>() + out["stream"]["cold_blocks"].get<int64_t>(),
      total_blocks);
  if (workers == 2) {
    EXPECT_TRUE(out["verify"]["bit_identical"].get<bool>()) << out["verify"].dump();
    EXPECT_EQ(out["verify"]["max_abs_diff"].get<double>(), 0.0);
  }

  const std::vector<float> got = ReadProbs(probs_file);
  ASSERT_EQ(got.size(), expected.size());
  double max_diff = 0;
  size_t differing = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(double{got[i]} - expected[i]));
    differing += std::memcmp(&got[i], &expected[i], sizeof(float)) != 0;
  }
  EXPECT_EQ(differing, 0u) << "max |p - p_ref| = " << max_diff << " with " << workers << " workers";
}

INSTANTIATE_TEST_SUITE_P(Workers, ParityTest, ::testing::Values(1, 2, 4),
                         [](const ::testing::TestParamInfo<int32_t>& i) {
                           return std::to_string(i.param) + "workers";
                         });

}  // namespace
}  // namespace sparsefill::integration
