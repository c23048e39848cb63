#!/usr/bin/env bash
# Runs on the GPU machine over a .devpkg/ made by tools/device/pack.sh: every GPU test binary,
# then compute-sanitizer memcheck on a small case. A run that executes zero GPU tests fails
# (STYLE §11): skips are counted and reported.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
pkg=$(realpath -m "${DEVPKG:-$root/.devpkg}")  # DEVPKG=.devpkg-x for another pack
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
# cuBLASLt is not packed (hundreds of MiB): the toolkit's, or the one torch's wheels bring.
pip_cublas=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null || true)
export LD_LIBRARY_PATH="$pkg/lib:/usr/local/cuda/lib64:${pip_cublas}:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
status=0
executed=0
for t in "$pkg"/tests/gpu_*; do
  [[ -x "$t" ]] || continue
  name=$(basename "$t")
  (cd "$root" && "$t" --gtest_output=json:"$out/$name.json") > "$out/$name.log" 2>&1 || status=1
  tail -3 "$out/$name.log"
  ran=$(python3 -c "
import json,sys
d=json.load(open('$out/$name.json'))
n=sum(1 for s in d['testsuites'] for t in s['testsuite'] if t.get('result')=='COMPLETED')
print(n)")
  echo "$name: $ran tests executed (not skipped)"
  executed=$((executed + ran))
done
if command -v compute-sanitizer >/dev/null; then
  for t in "$pkg"/tests/gpu_*; do
    # A binary with no test matching the filter has nothing small enough to check.
    if ! (cd "$root" && "$t" --gtest_list_tests --gtest_filter="${SANITIZER_FILTER:-*}") \
        | grep -q '^  '; then
      echo "memcheck: no test of $(basename "$t") matches ${SANITIZER_FILTER:-*}; skipped"
      continue
    fi
    (cd "$root" && compute-sanitizer --tool memcheck --error-exitcode 3 "$t" \
       --gtest_filter="${SANITIZER_FILTER:-*}" > "$out/memcheck-$(basename "$t").log" 2>&1) \
      || { echo "memcheck FAILED for $t"; status=1; }
    tail -2 "$out/memcheck-$(basename "$t").log"
  done
fi
echo "GPU tests executed: $executed"
if [[ $executed -eq 0 ]]; then echo "no GPU test executed: failing"; exit 1; fi
exit $status
