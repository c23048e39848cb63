// `sparsefill demo` end to end on a short prompt, and its clean-up on SIGINT: no process of the
// demo and no temporary directory survive it.
// gcc 12 with -fsanitize=address (tools/sanitize asan) reports -Wmaybe-uninitialized inside
// libstdc++'s <regex> (the std::function move in _State), a false positive that -Werror would
// turn into a failed sanitizer build.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <dirent.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/harness.h"

namespace sparsefill::integration {
namespace {

using ::testing::HasSubstr;

// Children of `parent`, from /proc.
std::vector<pid_t> ChildrenOf(pid_t parent) {
  std::vector<pid_t> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(e.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    char state;
    pid_t ppid;
    if (rest >> state >> ppid && ppid == parent) out.push_back(std::stoi(name));
  }
  return out;
}

// Gone, or a zombie nobody has reaped yet (it runs no code any more).
bool Dead(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  if (!in) return true;
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() &&
         (stat[close + 2] == 'Z' || stat[close + 2] == 'X');
}

TEST(DemoTest, ShortRunReportsEverything) {
  auto model = TinyModel(2);
  ASSERT_TRUE(model.ok()) << model.status();
  tools::ChildOptions o;
  o.program = Bin() + "/sparsefill";
  o.args = {"demo", "--model", *model, "--max-tokens", "1024", "--workers", "2", "--json"};
  auto demo = tools::ChildProcess::Spawn(o);
  ASSERT_TRUE(demo.ok()) << demo.status();
  auto code = (*demo)->Wait(std::chrono::seconds(120));
  ASSERT_TRUE(code.ok()) << code.status();
  ASSERT_EQ(*code, 0) << (*demo)->Stdout();
  // With --json, stdout is the report alone (progress goes to stderr).
  const std::string out = (*demo)->Stdout();
  const nlohmann::json j = nlohmann::json::parse(out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << out;
  EXPECT_EQ(j["workers"].get<int>(), 2);
  EXPECT_EQ(j["prefill"]["tokens"].get<int64_t>(), 1024);
  EXPECT_GT(j["prefill"]["tokens_per_second"].get<double>(), 0);
  EXPECT_GE(j["prefill"]["information_loss"].get<double>(), 0);  // measured by default
  // The default sample (1024 positions) covers this prompt: every query.
  EXPECT_EQ(j["prefill"]["information_loss_queries"].get<int64_t>(), 1024);
  const nlohmann::json& stream = j["sink"]["stream"];
  EXPECT_EQ(stream["checksum_failures"].get<int64_t>(), 0);
  EXPECT_EQ(stream["checksums_verified"].get<int64_t>(),
            j["sink"]["layout"]["total_blocks"].get<int64_t>());
  EXPECT_GT(stream["bytes"].get<int64_t>(), 0);
  EXPECT_EQ(j["sink"]["decode"]["top"].size(), 5u);
  EXPECT_THAT(j["text"].get<std::string>(), HasSubstr("pride_and_prejudice"));
}

// --loss-queries goes from the client through the coordinator to the workers, and the report (and
// the decode sink's copy of the stats) says how many queries the information loss is over.
TEST(DemoTest, TheInformationLossSampleIsReported) {
  auto model = TinyModel(2);
  ASSERT_TRUE(model.ok()) << model.status();
  tools::ChildOptions o;
  o.program = Bin() + "/sparsefill";
  o.args = {"demo",      "--model", *model,           "--max-tokens", "1024",
            "--workers", "2",       "--loss-queries", "100"};
  auto demo = tools::ChildProcess::Spawn(o);
  ASSERT_TRUE(demo.ok()) << demo.status();
  auto code = (*demo)->Wait(std::chrono::seconds(120));
  ASSERT_TRUE(code.ok()) << code.status();
  ASSERT_EQ(*code, 0) << (*demo)->Stdout();
  EXPECT_THAT((*demo)->Stdout(), HasSubstr("a stratified sample of 100 of the 1024 queries"));

  o.args.push_back("--json");
  auto json = tools::ChildProcess::Spawn(o);
  ASSERT_TRUE(json.ok()) << json.status();
  code = (*json)->Wait(std::chrono::seconds(120));
  ASSERT_TRUE(code.ok()) << code.status();
  ASSERT_EQ(*code, 0) << (*json)->Stdout();
  const nlohmann::json j = nlohmann::json::parse((*json)->Stdout(), nullptr, false);
  ASSERT_TRUE(j.is_object()) << (*json)->Stdout();
  EXPECT_EQ(j["prefill"]["information_loss_queries"].get<int64_t>(), 100);

  o.args = {"demo", "--model", *model, "--max-tokens", "1024", "--loss-queries", "0"};
  o.stderr_path = ::testing::TempDir() + "/demo_test_bad_loss_queries.err";
  auto bad = tools::ChildProcess::Spawn(o);
  ASSERT_TRUE(bad.ok()) << bad.status();
  code = (*bad)->Wait(std::chrono::seconds(30));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 2);
  EXPECT_THAT((*bad)->StderrTail(), HasSubstr("--loss-queries 0"));
  std::filesystem::remove(o.stderr_path);
}

TEST(DemoTest, SigintStopsEveryProcessAndRemovesTheWorkDirectory) {
  auto model = TinyModel(2);
  ASSERT_TRUE(model.ok()) << model.status();
  tools::ChildOptions o;
  o.program = Bin() + "/sparsefill";
  // Long enough to be interrupted in the middle of the prefill.
  o.args = {"demo", "--model", *model, "--max-tokens", "32768", "--workers", "2"};
  auto demo = tools::ChildProcess::Spawn(o);
  ASSERT_TRUE(demo.ok()) << demo.status();
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  std::string out;
  while (std::chrono::steady_clock::now() < end &&
         (out = (*demo)->Stdout()).find("admitted") == std::string::npos && (*demo)->Running()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_THAT(out, HasSubstr("admitted"));
  std::smatch m;
  ASSERT_TRUE(std::regex_search(out, m, std::regex("logs in (\\S+)/logs"))) << out;
  const std::string work_dir = m[1];
  ASSERT_TRUE(std::filesystem::exists(work_dir));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the sink is starting too
  const std::vector<pid_t> children = ChildrenOf((*demo)->pid());
  ASSERT_GE(children.size(), 3u) << "2 workers and a coordinator at least";

  (*demo)->Signal(SIGINT);
  auto code = (*demo)->Wait(std::chrono::seconds(20));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 128 + SIGINT);
  for (pid_t pid : children) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!Dead(pid) && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_TRUE(Dead(pid)) << "process " << pid << " of the demo survived SIGINT";
  }
  EXPECT_FALSE(std::filesystem::exists(work_dir)) << work_dir << " was left behind";
}

}  // namespace
}  // namespace sparsefill::integration
