// `bench soak`: issue 9 item 4. Exit code 1 when any property failed (the JSON lists which).
#include <cstdio>
#include <memory>

#include "absl/strings/str_cat.h"
#include "tools/bench/harness/device_info.h"
#include "tools/bench/load/load_command.h"
#include "tools/bench/load/load_run.h"
#include "tools/bench/load/soak_run.h"
#include "tools/sparsefill/child_process.h"

namespace sparsefill::bench {

CLI::App* AddSoakCommand(CLI::App& app, SoakArgs& a) {
  CLI::App* sub = app.add_subcommand(
      "soak", "prefill + stream for a while, SIGKILL/restart servers, inject RocksDB write errors");
  AddClusterFlags(*sub, a.cluster);
  sub->add_option("--seconds", a.seconds, "how long clients run")->capture_default_str();
  sub->add_option("--clients", a.clients, "concurrent clients")->capture_default_str();
  sub->add_option("--min-tokens", a.min_tokens, "shortest prompt")->capture_default_str();
  sub->add_option("--max-tokens", a.max_tokens, "longest prompt")->capture_default_str();
  sub->add_option("--chaos-min-s", a.chaos_min_s, "shortest pause between kills")
      ->capture_default_str();
  sub->add_option("--chaos-max-s", a.chaos_max_s, "longest pause between kills")
      ->capture_default_str();
  sub->add_option("--write-error-rate", a.write_errors,
                  "probability that a worker's RocksDB block batch fails")
      ->capture_default_str();
  sub->add_option("--deadline-s", a.deadline_s, "deadline of every call")->capture_default_str();
  sub->add_option("--grace-s", a.grace_s, "how far past its deadline a call may end")
      ->capture_default_str();
  AddCommonFlags(*sub, a.common);
  return sub;
}

int RunSoak(const SoakArgs& a) {
  const std::string date = UtcIsoNow();
  SoakOptions o;
  std::unique_ptr<tools::TempDir> work;
  if (absl::Status s =
          PrepareCluster(a.cluster, &o.cluster, &o.novel_tokens, &o.novel_text, &o.seed, &work);
      !s.ok()) {
    return Fail("soak", s);
  }
  o.seconds = a.seconds;
  o.clients = a.clients;
  o.min_tokens = a.min_tokens;
  o.max_tokens = a.max_tokens;
  o.chaos_min_s = a.chaos_min_s;
  o.chaos_max_s = a.chaos_max_s;
  o.write_error_rate = a.write_errors;
  o.deadline = std::chrono::milliseconds(static_cast<int64_t>(a.deadline_s * 1000));
  o.grace = std::chrono::milliseconds(static_cast<int64_t>(a.grace_s * 1000));
  o.log = [](const std::string& s) { std::fprintf(stderr, "bench soak: %s\n", s.c_str()); };
  std::fprintf(stderr, "bench soak: seed %llu\n", static_cast<unsigned long long>(o.seed));
  absl::StatusOr<SoakResult> r = RunSoakTest(o);
  if (!r.ok()) return Fail("soak", r.status());
  DeviceInfo device;
  if (auto d = ProbeDevice(DefaultDataDir()); d.ok()) device = *std::move(d);
  Report report;
  report.benchmark = "soak";
  report.config = r->json["config"];
  report.results = r->json;
  report.results.erase("config");
  report.ratios = {{"acceptance", {{"ok", r->violations.empty()}}}};
  report.notes.push_back(
      absl::StrCat(device.logical_cores, " logical cores shared by servers and clients"));
  std::string table = absl::StrCat(
      "requests ", r->requests, ", READY ", r->ready, ", streamed back intact ", r->verified,
      "\nprefill by status: ", r->json["counts"]["prefill_by_status"].dump(),
      "\nstream by status: ", r->json["counts"]["stream_by_status"].dump(), "\nrestarts ",
      r->restarts, ", recovered ", r->recoveries, ", recovery from kill ",
      r->json["chaos"]["recovery_from_kill"].dump(), "\nlongest call ",
      Fixed(r->json["longest_call_s"].get<double>(), 2), " s\n");
  for (const std::string& v : r->violations) table += absl::StrCat("VIOLATION: ", v, "\n");
  table += absl::StrCat("soak: ", r->violations.empty() ? "PASS" : "FAIL", "\n");
  const int code = Publish(report, device, a.common, date, table);
  return r->violations.empty() ? code : 1;
}

}  // namespace sparsefill::bench
