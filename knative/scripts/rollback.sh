#!/usr/bin/env bash
# Sends all traffic back to the previous revision (or a named one), pinned.
set -euo pipefail
# shellcheck source=knative/scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<USAGE
Usage: $(basename "$0") [--to REVISION] [--env dev|prod] [--dry-run]

  --to REVISION   100% to this revision (with --dry-run, required)
                  default: the revision created just before the one now taking most traffic
  --env dev|prod  environment (default: prod)
  --dry-run       print the kn command instead of running it
USAGE
}

# The revision created just before the one that now takes the largest share of traffic.
previous_revision() {
  local ns current previous=""
  ns="$(namespace)"
  current="$(kubectl get ksvc "$SERVICE" --namespace "$ns" \
    -o jsonpath='{range .status.traffic[*]}{.percent} {.revisionName}{"\n"}{end}' | sort -rn | awk 'NR == 1 { print $2 }')"
  [[ -n "$current" ]] || die "service $SERVICE in $ns reports no traffic; name the revision with --to"
  while read -r name; do
    [[ "$name" == "$current" ]] && break
    previous="$name"
  done < <(kubectl get revisions --namespace "$ns" -l "serving.knative.dev/service=$SERVICE" \
    --sort-by=.metadata.creationTimestamp -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
  [[ -n "$previous" ]] || die "no revision older than $current; name one with --to"
  echo "$previous"
}

target=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --to) [[ $# -ge 2 ]] || die "--to needs a value"; check_revision "$2"; target="$2"; shift 2 ;;
    *) common_option "$@" || die "unknown option '$1' (see --help)"; shift "$SHIFT_BY" ;;
  esac
done

if [[ -z "$target" ]]; then
  ((DRY_RUN == 0)) || die "--dry-run needs --to REVISION (finding the previous revision reads the cluster)"
  require kubectl "https://kubernetes.io/docs/tasks/tools/"
  target="$(previous_revision)"
fi
require_kn
run kn service update "$SERVICE" --namespace "$(namespace)" --traffic "$target=100"
