#!/usr/bin/env bash
# Long fuzzer runs (issue 9 item 1: >= 10 million executions each) on a machine with many cores
# and no clang (the GPU machine): each fuzzer as several libFuzzer jobs sharing one corpus
# directory, all fuzzers at once.
#   tools/device/run_fuzz.sh --pack [BUILD_DIR]   here: the fuzzers of BUILD_DIR (default
#       build-fuzz, built by tools/fuzz) with their non-system shared libraries and the Qwen3
#       tokenizer.json into $DEVPKG.tar.xz (carry its folder, e.g. .devpkg-fuzz/, to the machine)
#   tools/device/run_fuzz.sh [name=jobs ...]      there, from the repo root: unpacks and runs
#       (default: every packed fuzzer with FUZZ_JOBS jobs)
# Env: DEVPKG (default .devpkg-fuzz), FUZZ_RUNS (executions per fuzzer in total, default 10000000),
# FUZZ_JOBS (default jobs per fuzzer, 2), FUZZ_SECONDS (-max_total_time of each job, default 360),
# OUT (logs, summary.txt and campaign.json; default /tmp/fuzz-out).
# Each job runs FUZZ_RUNS / jobs executions (-runs) unless FUZZ_SECONDS ends it first; the summary
# sums stat::number_of_executed_units over the jobs. A crash, leak or sanitizer report fails the
# fuzzer; its reproducer lands in $OUT/artifacts/<name>/ (replay: <name>_fuzzer FILE).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
pkg=$(realpath -m "${DEVPKG:-$root/.devpkg-fuzz}")
out=${OUT:-/tmp/fuzz-out}
runs=${FUZZ_RUNS:-10000000}
default_jobs=${FUZZ_JOBS:-2}
seconds=${FUZZ_SECONDS:-360}

if [[ ${1:-} == --pack ]]; then
  build=$(realpath "${2:-$root/build-fuzz}")
  tok=${SPARSEFILL_QWEN3_TOKENIZER:-$root/../shared/data/qwen3-tokenizer/tokenizer.json}
  rm -rf "$pkg"
  mkdir -p "$pkg/fuzz" "$pkg/lib" "$pkg/data"
  cp "$build"/fuzz/*_fuzzer "$pkg/fuzz/"
  cp "$tok" "$pkg/data/tokenizer.json"
  skip='^(linux-vdso|libc\.so|libm\.so|ld-linux|libpthread|libdl|librt)'
  for f in "$pkg"/fuzz/*; do
    { ldd "$f" 2>/dev/null || true; } | awk '/=> \//{print $1" "$3}' | while read -r name path; do
      if ! [[ "$name" =~ $skip ]]; then cp -nL "$path" "$pkg/lib/$name"; fi
    done
  done
  # Symbols stay (sanitizer reports name functions); debug info goes.
  strip --strip-debug "$pkg"/fuzz/* "$pkg"/lib/* 2>/dev/null || true
  tar -C "$pkg" -cf - fuzz lib data | xz -T2 -6 >"$pkg.tar.xz.tmp"
  rm -rf "$pkg" && mkdir -p "$pkg" && mv "$pkg.tar.xz.tmp" "$pkg/pack.tar.xz"
  du -sh "$pkg/pack.tar.xz"
  exit 0
fi
if [[ -f "$pkg/pack.tar.xz" && ! -d "$pkg/fuzz" ]]; then
  tar -C "$pkg" -xJf "$pkg/pack.tar.xz" || exit 2
fi
mkdir -p "$out"
export LD_LIBRARY_PATH="$pkg/lib:${LD_LIBRARY_PATH:-}"
export SPARSEFILL_QWEN3_TOKENIZER="$pkg/data/tokenizer.json"

declare -A jobs
if [[ $# -eq 0 ]]; then
  for f in "$pkg"/fuzz/*_fuzzer; do jobs[$(basename "${f%_fuzzer}")]=$default_jobs; done
else
  for a in "$@"; do jobs[${a%%=*}]=${a#*=}; done
fi

# LeakSanitizer needs ptrace, which some containers refuse: probe once, and say so when it fails.
first=$(ls "$pkg"/fuzz/*_fuzzer | head -1)
if ! "$first" -runs=1 "$root/tests/fuzz/corpus/$(basename "${first%_fuzzer}")" >"$out/probe.log" 2>&1 \
    && grep -q 'LeakSanitizer has encountered a fatal error' "$out/probe.log"; then
  echo "LeakSanitizer cannot run here (ptrace refused): leaks are not checked in this run"
  export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
fi

cd "$root"
for n in "${!jobs[@]}"; do
  j=${jobs[$n]}
  work="$out/work/$n"
  mkdir -p "$work" "$out/artifacts/$n" "$out/logs/$n"
  args=(-rss_limit_mb=2048 -timeout=30 -print_final_stats=1 -reload=10
        "-artifact_prefix=$out/artifacts/$n/" "-runs=$(((runs + j - 1) / j))"
        "-max_total_time=$seconds" "-jobs=$j" "-workers=$j")
  if [[ -f "tests/fuzz/$n.dict" ]]; then args+=("-dict=$root/tests/fuzz/$n.dict"); fi
  if [[ $n == tokenizer_encode ]]; then args+=(-max_len=512); fi
  # -jobs writes fuzz-<i>.log into the current directory: one directory per fuzzer.
  (cd "$out/logs/$n" && "$pkg/fuzz/${n}_fuzzer" "${args[@]}" "$work" "$root/tests/fuzz/corpus/$n" \
     >"$out/logs/$n/driver.log" 2>&1) &
done
wait

summary() {
  local status=0
  printf '%-22s %5s %12s %10s %8s %s\n' fuzzer jobs executions exec/s corpus result
  for n in $(printf '%s\n' "${!jobs[@]}" | sort); do
    execs=0 rate=0 result=ok
    for log in "$out/logs/$n"/fuzz-*.log; do
      [[ -f $log ]] || continue
      e=$(sed -n 's/^stat::number_of_executed_units: //p' "$log" | tail -1)
      r=$(sed -n 's/^stat::average_exec_per_sec: //p' "$log" | tail -1)
      if [[ -z $e ]]; then result=FAILED; fi
      execs=$((execs + ${e:-0}))
      rate=$((rate + ${r:-0}))
      if grep -qE '^==[0-9]+==ERROR|runtime error:|invariant|Test unit written' "$log"; then
        result=FAILED
      fi
    done
    corpus=$(ls "$out/work/$n" | wc -l)
    if [[ $execs -lt $runs ]]; then result="${result}(short)"; fi
    [[ $result == ok ]] || status=1
    printf '%-22s %5s %12s %10s %8s %s\n' "$n" "${jobs[$n]}" "$execs" "$rate" "$corpus" "$result"
  done
  return $status
}
summary >"$out/summary.txt"
status=$?
cat "$out/summary.txt"

# The campaign ledger travels with the corpus ($out/work): a run that resumes a corpus adds its
# numbers to the earlier runs'; $out/campaign.json holds every run and the totals per fuzzer.
python3 - "$out" "$runs" "$seconds" "$*" <<'PY' || status=1
import datetime, json, os, platform, sys
out, target, seconds, argv = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ledger_path = os.path.join(out, "work", "campaign.json")
ledger = json.load(open(ledger_path)) if os.path.exists(ledger_path) else {"runs": []}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
run = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
       "device": f"{cpu}, {os.cpu_count()} cores", "seconds_per_job": seconds,
       "command": f"tools/device/run_fuzz.sh {argv}".strip(), "fuzzers": {}}
for line in open(os.path.join(out, "summary.txt")).read().splitlines()[1:]:
    name, jobs, execs, rate, corpus, result = line.split()
    run["fuzzers"][name] = {"jobs": int(jobs), "executions": int(execs), "exec_per_sec": int(rate),
                            "corpus": int(corpus), "result": result.replace("(short)", "")}
ledger["runs"].append(run)
totals = {}
for r in ledger["runs"]:
    for name, f in r["fuzzers"].items():
        t = totals.setdefault(name, {"executions": 0, "runs": 0, "result": "ok"})
        t["executions"] += f["executions"]
        t["runs"] += 1
        if f["result"] != "ok":
            t["result"] = "FAILED"
for t in totals.values():
    t["reached_target"] = t["executions"] >= target
ledger.update({"bench": "fuzz", "target_executions": target, "totals": totals})
json.dump(ledger, open(ledger_path, "w"), indent=1)
json.dump(ledger, open(os.path.join(out, "campaign.json"), "w"), indent=1)
for name, t in sorted(totals.items()):
    print(f"campaign {name:22s} {t['executions']:12d} executions in {t['runs']} run(s): {t['result']}"
          f"{'' if t['reached_target'] else ' (short of ' + str(target) + ')'}")
PY
exit $status
