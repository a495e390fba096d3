#!/usr/bin/env bash
# Splits traffic between the stable revision and a candidate, each reachable by its own tag.
set -euo pipefail
# shellcheck source=knative/scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<USAGE
Usage: $(basename "$0") --stable REVISION --candidate REVISION [--percent N] [--env dev|prod] [--dry-run]

Tags both revisions (rev-<commit tag>, so each has its own URL rev-<tag>-sentiment.<ns>.<domain>)
and sends N% (default 10) of the traffic to the candidate, the rest to the stable revision.
Raise N by running it again; finish with promote.sh, or go back with rollback.sh.
  --stable REVISION     e.g. sentiment-3f2a9c1 (see status.sh)
  --candidate REVISION  e.g. sentiment-8d41be0 (created by deploy.sh)
  --percent N           1..99, the candidate's share
  --env dev|prod        environment (default: prod)
  --dry-run             print the kn command instead of running it
USAGE
}

stable=""
candidate=""
percent=10
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --stable) [[ $# -ge 2 ]] || die "--stable needs a value"; stable="$2"; shift 2 ;;
    --candidate) [[ $# -ge 2 ]] || die "--candidate needs a value"; candidate="$2"; shift 2 ;;
    --percent) [[ $# -ge 2 ]] || die "--percent needs a value"; percent="$2"; shift 2 ;;
    *) common_option "$@" || die "unknown option '$1' (see --help)"; shift "$SHIFT_BY" ;;
  esac
done

[[ -n "$stable" && -n "$candidate" ]] || die "both --stable and --candidate are required (see --help)"
check_revision "$stable"
check_revision "$candidate"
[[ "$stable" != "$candidate" ]] || die "--stable and --candidate name the same revision"
if ! [[ "$percent" =~ ^[0-9]+$ ]] || ((percent < 1 || percent > 99)); then
  die "--percent must be 1..99, not '$percent'"
fi
require_kn

stable_tag="$(tag_of "$stable")"
candidate_tag="$(tag_of "$candidate")"
run kn service update "$SERVICE" --namespace "$(namespace)" \
  --tag "$stable=$stable_tag" --tag "$candidate=$candidate_tag" \
  --traffic "$stable_tag=$((100 - percent)),$candidate_tag=$percent"
