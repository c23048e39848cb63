// The acceptance run, end to end through the real binaries: make-model writes the tiny
// checkpoint, `sparsefill prefill` prefills 16K tokens of the shared novel with PHSA and dense.
#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/compare.h"

namespace sparsefill {
namespace {

struct CommandResult {
  int exit_code = -1;
  std::string out;
};

CommandResult RunCommand(const std::string& cmd) {
  CommandResult r;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

class CliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_ = testing::SharedDataDir();
    if (data_.empty()) return;
    model_ = testing::MakeTempDir("sparsefill-cli") + "/tiny";
    const CommandResult r =
        RunCommand(testing::BinDir() + "/make-model --shape tiny --out " + model_ +
                   " --tokenizer " + data_ + "/qwen3-tokenizer/tokenizer.json");
    ASSERT_EQ(r.exit_code, 0) << r.out;
  }
  void SetUp() override {
    if (data_.empty()) GTEST_SKIP() << "../shared/data (the novel and tokenizer) is not present";
  }
  static nlohmann::json Prefill(const std::string& args) {
    const CommandResult r = RunCommand(testing::BinDir() + "/sparsefill prefill --model " +
                                       model_ + " --text " + data_ +
                                       "/pride_and_prejudice.txt --json " + args);
    EXPECT_EQ(r.exit_code, 0) << r.out;
    const auto j = nlohmann::json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.out;
    return j;
  }
  static std::string data_, model_;
};
std::string CliTest::data_, CliTest::model_;

TEST_F(CliTest, PhsaOn16KTokensIsSparseAndMeasured) {
  const auto j = Prefill("--max-tokens 16384 --policy phsa --measure");
  EXPECT_EQ(j["tokens"], 16384);
  EXPECT_EQ(j["attention"], "sparse");
  // PHSA's paper setting keeps 57 blocks of 16 per (KV head, query): the whole causal prefix up
  // to 57 blocks, else 56 full blocks plus the query's own partial block. So the key count is
  // known exactly (2 KV heads, 4 layers).
  int64_t per_head = 0;
  for (int64_t t = 0; t < 16384; ++t) per_head += t / 16 + 1 <= 57 ? t + 1 : 56 * 16 + t % 16 + 1;
  EXPECT_EQ(j["selected_keys"].get<int64_t>(), per_head * 2 * 4);
  EXPECT_EQ(j["causal_keys"].get<int64_t>(), int64_t{16384} * 16385 / 2 * 2 * 4);
  EXPECT_NEAR(j["sparsity"].get<double>(), 1.0 - double(per_head) / (16384.0 * 16385 / 2), 1e-9);
  EXPECT_GE(j["context_sparsity"].get<double>(), 0.9);
  const double loss = j["quality"]["information_loss"].get<double>();
  EXPECT_GT(loss, 0.0);
  EXPECT_LT(loss, 1.0);
  EXPECT_EQ(j["quality"]["information_loss_queries"].get<int64_t>(), 1024);  // the default sample
  ASSERT_EQ(j["layers"].size(), 4u);
  for (const auto& l : j["layers"]) {
    EXPECT_GT(l["information_loss"].get<double>(), 0.0);
    EXPECT_LT(l["information_loss"].get<double>(), 1.0);
  }
  EXPECT_GT(j["quality"]["hidden_rel_l2"].get<double>(), 0.0);
  EXPECT_GE(j["quality"]["next_token_kl"].get<double>(), 0.0);
  std::printf("phsa 16K: %s\n", j.dump().c_str());
}

// The sampled information loss against the loss over every query, on the novel with the tiny
// model: the sample (stratified over the prompt) must land close to the full mean, whose early
// queries lose nothing and late ones most.
TEST_F(CliTest, SampledInformationLossIsCloseToEveryQuery) {
  const auto all = Prefill("--max-tokens 8192 --policy phsa --measure --loss-queries all");
  const auto sampled = Prefill("--max-tokens 8192 --policy phsa --measure --loss-queries 512");
  ASSERT_EQ(all["attention"], "sparse");
  EXPECT_EQ(all["quality"]["information_loss_queries"].get<int64_t>(), 8192);
  EXPECT_EQ(sampled["quality"]["information_loss_queries"].get<int64_t>(), 512);
  const double full = all["quality"]["information_loss"].get<double>();
  const double part = sampled["quality"]["information_loss"].get<double>();
  EXPECT_GT(full, 0.0);
  EXPECT_NEAR(part, full, 0.002);
  for (size_t l = 0; l < all["layers"].size(); ++l) {
    EXPECT_NEAR(sampled["layers"][l]["information_loss"].get<double>(),
                all["layers"][l]["information_loss"].get<double>(), 0.005);
  }
  // Nothing else depends on the sample. (The first 512 queries alone would measure 0: PHSA keeps
  // 57 blocks of 16, every causal key of the first 912 queries.)
  EXPECT_EQ(sampled["quality"]["hidden_rel_l2"], all["quality"]["hidden_rel_l2"]);
  EXPECT_EQ(sampled["selected_keys"], all["selected_keys"]);
  std::printf("information loss over 8192 queries %.6f, over a sample of 512 %.6f\n", full, part);
}

TEST_F(CliTest, DenseReportsZeroSparsity) {
  const auto j = Prefill("--max-tokens 16384 --policy dense");
  EXPECT_EQ(j["attention"], "dense");
  EXPECT_EQ(j["sparsity"].get<double>(), 0.0);
}

TEST_F(CliTest, BadInputIsRejectedWithItsName) {
  CommandResult r = RunCommand(testing::BinDir() + "/sparsefill prefill --model " + model_ +
                               " --text /no/such/file.txt");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find("/no/such/file.txt"), std::string::npos) << r.out;
  r = RunCommand(testing::BinDir() + "/sparsefill prefill --model " + model_ +
                 " --text " + data_ + "/pride_and_prejudice.txt --policy sparse-ish");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find("sparse-ish"), std::string::npos) << r.out;
  for (const char* bad : {"0", "-2", "many"}) {
    r = RunCommand(testing::BinDir() + "/sparsefill prefill --model " + model_ + " --text " +
                   data_ + "/pride_and_prejudice.txt --measure --loss-queries " + bad);
    EXPECT_EQ(r.exit_code, 2) << r.out;
    EXPECT_NE(r.out.find("--loss-queries " + std::string(bad)), std::string::npos) << r.out;
  }
}

}  // namespace
}  // namespace sparsefill
