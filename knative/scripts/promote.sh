#!/usr/bin/env bash
# Sends all traffic to one revision (pinned), or back to following the latest ready revision.
set -euo pipefail
# shellcheck source=knative/scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<USAGE
Usage: $(basename "$0") (--revision REVISION | --latest) [--env dev|prod] [--dry-run]

  --revision REVISION  100% to this revision, pinned: later deploys start at 0% (the safe default)
  --latest             100% to @latest: every later deploy takes all traffic once ready
  --env dev|prod       environment (default: prod)
  --dry-run            print the kn command instead of running it
Tags stay, so a promoted revision keeps its rev-<tag> URL.
USAGE
}

target=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --revision) [[ $# -ge 2 ]] || die "--revision needs a value"; check_revision "$2"; target="$2"; shift 2 ;;
    --latest) target="@latest"; shift ;;
    *) common_option "$@" || die "unknown option '$1' (see --help)"; shift "$SHIFT_BY" ;;
  esac
done

[[ -n "$target" ]] || die "say where traffic goes: --revision REVISION or --latest (see --help)"
require_kn
run kn service update "$SERVICE" --namespace "$(namespace)" --traffic "$target=100"
