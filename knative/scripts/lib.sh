# Shared by the knative/scripts/*.sh commands (sourced, not run).
# shellcheck shell=bash
# SHIFT_BY is set here and read by the scripts that source this file.
# shellcheck disable=SC2034

readonly SERVICE=sentiment
KNATIVE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly KNATIVE_DIR
DRY_RUN=0
ENVIRONMENT=prod

die() {
  echo "$(basename "$0"): $*" >&2
  exit 1
}

# The namespace of each environment; the overlays set the same ones (tests check it).
namespace() {
  case "$ENVIRONMENT" in
    dev) echo sentiment-dev ;;
    prod) echo sentiment ;;
    *) die "unknown environment '$ENVIRONMENT' (use dev or prod)" ;;
  esac
}

overlay() {
  echo "$KNATIVE_DIR/overlays/$ENVIRONMENT"
}

# One argument as a shell word: plain when it is safe, single-quoted otherwise.
shell_word() {
  if [[ "$1" =~ ^[][A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Prints the command (ready to paste into a shell) with --dry-run, runs it otherwise.
run() {
  if ((DRY_RUN)); then
    local words=() arg
    for arg in "$@"; do words+=("$(shell_word "$arg")"); done
    echo "${words[*]}"
  else
    "$@"
  fi
}

# A tool the real run needs; --dry-run needs none of them.
require() {
  ((DRY_RUN)) && return 0
  command -v "$1" >/dev/null || die "$1 is not installed or not on PATH ($2)"
}

require_kn() {
  require kn "install it: https://knative.dev/docs/client/install-kn/"
}

# Revision names are DNS labels that start with "<service>-" (Knative's rule for chosen names).
check_revision() {
  [[ "$1" =~ ^${SERVICE}-[a-z0-9]([-a-z0-9]*[a-z0-9])?$ && ${#1} -le 63 ]] ||
    die "revision '$1' must look like ${SERVICE}-<commit tag> (lowercase letters, digits, '-'; at most 63 characters)"
}

# A traffic tag per revision ("rev-<commit tag>"): it gives the revision its own URL
# (rev-<tag>-sentiment.<namespace>.<domain>) and never has to move to another revision.
tag_of() {
  echo "rev-${1#"${SERVICE}"-}"
}

# Parses the options every script shares; returns 1 for an option it does not know.
# Sets SHIFT_BY to the number of arguments consumed.
common_option() {
  SHIFT_BY=1
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --env)
      [[ $# -ge 2 ]] || die "--env needs a value (dev or prod)"
      ENVIRONMENT="$2"
      SHIFT_BY=2
      namespace >/dev/null
      ;;
    *) return 1 ;;
  esac
}
