#!/usr/bin/env bash
# Shows the service, its revisions with their traffic share and tags, and its pods.
set -euo pipefail
# shellcheck source=knative/scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<USAGE
Usage: $(basename "$0") [--env dev|prod] [--dry-run]

Runs kn service describe, kn revision list and kubectl get pods for the sentiment service.
Watch a scale-to-zero: kubectl get pods -n <namespace> -l serving.knative.dev/service=sentiment -w
  --env dev|prod  environment (default: prod)
  --dry-run       print the commands instead of running them
USAGE
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    *) common_option "$@" || die "unknown option '$1' (see --help)"; shift "$SHIFT_BY" ;;
  esac
done

require_kn
require kubectl "https://kubernetes.io/docs/tasks/tools/"
ns="$(namespace)"
run kn service describe "$SERVICE" --namespace "$ns"
run kn revision list --service "$SERVICE" --namespace "$ns"
run kubectl get pods --namespace "$ns" -l "serving.knative.dev/service=$SERVICE"
