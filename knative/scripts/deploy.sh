#!/usr/bin/env bash
# Deploys an image as a new revision named after its commit tag: sentiment-<tag>.
# The name travels in the Service file (spec.template.metadata.name): `kn service apply` drops its
# own --revision-name flag but keeps the file's template name (kn pkg/commands/service/apply.go).
set -euo pipefail
# shellcheck source=knative/scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<USAGE
Usage: $(basename "$0") [--image REPO:TAG] [--suffix S] [--env dev|prod] [--dry-run]

Applies the overlay knative/overlays/<env> (config, mesh policies, domain mapping, dev Redis),
then the Knative Service with kn: revision sentiment-<TAG>[-S] running REPO:TAG (the name is set
in the Service's spec.template.metadata.name, so the revision really carries it).
  --image REPO:TAG  image to run (default: \$IMAGE); TAG is the git commit, never "latest"
  --suffix S        for a second revision of the same image (e.g. a config change): sentiment-<TAG>-S
  --env dev|prod    environment (default: prod; namespace sentiment-dev or sentiment)
  --dry-run         print the kubectl and kn commands instead of running them
Traffic: the first revision gets all traffic. Once promote.sh has pinned traffic to a named
revision, new revisions start at 0% until canary.sh / promote.sh move traffic to them.
USAGE
}

image="${IMAGE:-}"
suffix=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --image) [[ $# -ge 2 ]] || die "--image needs a value"; image="$2"; shift 2 ;;
    --suffix) [[ $# -ge 2 ]] || die "--suffix needs a value"; suffix="$2"; shift 2 ;;
    *) common_option "$@" || die "unknown option '$1' (see --help)"; shift "$SHIFT_BY" ;;
  esac
done

[[ -n "$image" ]] || die "no image: pass --image REPO:TAG or set IMAGE"
[[ "$image" =~ ^[^@[:space:]]+/[^@:[:space:]]+:([^:/@[:space:]]+)$ ]] ||
  die "image '$image' must be REPO:TAG with a registry and an explicit tag"
tag="${BASH_REMATCH[1]}"
[[ "$tag" != latest ]] || die "refusing the tag 'latest': deploy an immutable commit tag"
revision="${SERVICE}-${tag}${suffix:+-$suffix}"
check_revision "$revision"

require_kn
# kubectl renders the overlay, so even --dry-run needs it.
command -v kubectl >/dev/null || die "kubectl is not installed or not on PATH (https://kubernetes.io/docs/tasks/tools/)"

ns="$(namespace)"
ksvc="$(mktemp --suffix=.yaml)"
((DRY_RUN)) || trap 'rm -f "$ksvc"' EXIT

# The overlay's Service with this revision's image and name, rendered through a throw-away
# kustomization (kustomize accepts only relative paths to the overlay).
render_revision() {
  local dir
  dir="$(mktemp -d)"
  cat >"$dir/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$dir" "$(overlay)")
patches:
  - target:
      group: serving.knative.dev
      kind: Service
      name: ${SERVICE}
    patch: |-
      - op: add
        path: /spec/template/metadata/name
        value: ${revision}
      - op: replace
        path: /spec/template/spec/containers/0/image
        value: ${image}
YAML
  kubectl kustomize "$dir" | awk '
    /^---$/ { if (doc ~ /\napiVersion: serving.knative.dev\/v1\n/ && doc ~ /\nkind: Service\n/) print doc; doc = ""; next }
    { doc = doc "\n" $0 }
    END { if (doc ~ /\napiVersion: serving.knative.dev\/v1\n/ && doc ~ /\nkind: Service\n/) print doc }
  '
  rm -rf "$dir"
}

# Everything but the Knative Service itself goes through kubectl; kn applies the revision.
run kubectl apply -k "$(overlay)" -l 'app.kubernetes.io/component!=inference'
render_revision >"$ksvc"
grep -q "^      name: ${revision}$" "$ksvc" || die "the overlay $(overlay) renders no Knative Service '${SERVICE}'"
run kn service apply "$SERVICE" --namespace "$ns" --filename "$ksvc"
if ((DRY_RUN)); then
  echo "# $ksvc: the Knative Service rendered from $(overlay), revision ${revision}"
fi
