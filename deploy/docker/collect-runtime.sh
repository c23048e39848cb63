#!/bin/sh
# Copies the given binaries into DEST/bin and the shared libraries they load (ldd's closure) into
# DEST/lib, leaving out what the runtime image must provide itself: glibc (its loader has to match
# the image's) and the NVIDIA driver's libcuda / libnvidia-* (injected by the container toolkit
# to match the host's kernel driver). Used by the Dockerfiles' build stages:
#   collect-runtime.sh DEST BINARY...
set -eu
dest=$1
shift
mkdir -p "$dest/bin" "$dest/lib"
cp "$@" "$dest/bin/"
ldd "$@" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u |
  grep -vE '/(libc|libm|libdl|librt|libpthread|libresolv|libutil|ld-linux[^/]*)\.so[.0-9]*$' |
  grep -vE '/(libcuda|libnvidia-[^/]*)\.so[.0-9]*$' |
  while read -r lib; do cp -L "$lib" "$dest/lib/"; done
# Fail here, not at the first start in a cluster, if something did not resolve.
if ldd "$@" | grep -q "not found"; then
  ldd "$@" | grep "not found" >&2
  exit 1
fi
strip --strip-unneeded "$dest"/bin/* "$dest"/lib/* 2>/dev/null || true
