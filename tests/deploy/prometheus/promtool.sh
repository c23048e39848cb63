#!/usr/bin/env bash
# Runs promtool with the given arguments; exit 77 (CTest's skip code here) when it is not
# installed, so a machine without Debian's prometheus package reports the test as skipped.
set -euo pipefail
if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool not found: install Debian's prometheus package (tools/bootstrap does)" >&2
  exit 77
fi
exec promtool "$@"
