#!/usr/bin/env bash
# Packs binaries built here (tests and tools) with their non-system shared libraries into
# .devpkg/, for running on the GPU machine, whose image lacks Abseil, PCRE2 headers, utf8proc...
# (DESIGN: engine-only there; building here and carrying is the cheaper path on its lease.)
#   tools/device/pack.sh BUILD_DIR [PKG_DIR]     (PKG_DIR defaults to .devpkg; any /.devpkg*/)
# PACK_ONLY='gpu_* bench' packs only the binaries whose names match one of those globs (the
# working tree that travels is limited to 64 MiB).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:?build dir}
pkg=$(realpath -m "${2:-$root/.devpkg}")
rm -rf "$pkg"
mkdir -p "$pkg/bin" "$pkg/tests" "$pkg/lib"
for d in bin tests; do
  for f in "$build/$d"/*; do
    [[ -f "$f" && -x "$f" ]] || continue
    keep=1
    if [[ -n "${PACK_ONLY:-}" ]]; then
      keep=0
      for g in $PACK_ONLY; do [[ "$(basename "$f")" == $g ]] && keep=1; done
    fi
    [[ $keep -eq 1 ]] && cp -a "$f" "$pkg/$d/"
  done
done
# Libraries every glibc system has (or that must come from the device's driver) stay behind.
# cuBLAS/cuBLASLt are hundreds of MiB; the device machine's CUDA toolkit has the same version.
skip='^(linux-vdso|libc\.so|libm\.so|libstdc\+\+|libgcc_s|ld-linux|libpthread|libdl|librt|libcuda\.so|libcublas)'
for f in $(find "$pkg/bin" "$pkg/tests" -type f); do
  { ldd "$f" 2>/dev/null || true; } | awk '/=> \//{print $1" "$3}' | while read -r name path; do
    if ! [[ "$name" =~ $skip ]]; then cp -nL "$path" "$pkg/lib/$name"; fi
  done
done
strip --strip-unneeded "$pkg"/bin/* "$pkg"/tests/* 2>/dev/null || true
du -sh "$pkg"
