#!/usr/bin/env bash
# Creates the two Secrets the manifests reference, with fresh random tokens (nothing secret is
# committed):
#   sparsefill-worker-auth    token:  the bearer token the coordinator and the workers send to
#                                     workers
#                             tokens: the workers' token table ("token tenant" per line)
#   sparsefill-client-tokens  tokens: the coordinator's token table for API clients; one line
#                                     per tenant, from --tenant NAME (repeatable; default "default")
# The client tokens are printed once, "tenant token" per line: keep them.
#   deploy/k8s/create-secrets.sh NAMESPACE [--tenant NAME]... [--dry-run]
# --dry-run prints the Secret manifests instead of creating them (kubectl --dry-run=client).
set -euo pipefail
if [[ $# -lt 1 || "$1" == -* ]]; then
  sed -n '2,12p' "$0" >&2
  exit 2
fi
ns=$1
shift
tenants=()
dry=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tenant) tenants+=("${2:?--tenant needs a name}"); shift 2 ;;
    --dry-run) dry=(--dry-run=client -o yaml); shift ;;
    *) echo "create-secrets.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ ${#tenants[@]} -gt 0 ]] || tenants=(default)

token() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
internal=$(token)
printf '%s\n' "$internal" > "$tmp/token"
printf '%s sparsefill-internal\n' "$internal" > "$tmp/worker-tokens"
: > "$tmp/client-tokens"
for t in "${tenants[@]}"; do
  c=$(token)
  printf '%s %s\n' "$c" "$t" >> "$tmp/client-tokens"
  [[ ${#dry[@]} -gt 0 ]] || printf '%s %s\n' "$t" "$c"
done
kubectl -n "$ns" create secret generic sparsefill-worker-auth "${dry[@]}" \
  --from-file=token="$tmp/token" --from-file=tokens="$tmp/worker-tokens"
[[ ${#dry[@]} -eq 0 ]] || echo ---
kubectl -n "$ns" create secret generic sparsefill-client-tokens "${dry[@]}" \
  --from-file=tokens="$tmp/client-tokens"
