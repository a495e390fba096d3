#!/usr/bin/env bash
# Build the service image for linux/amd64, tag it with the commit, push it to the registry
# (Azure Container Registry) and point the prod kustomize overlay at it.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: build-push.sh [--registry NAME.azurecr.io] [--allow-dirty] [--dry-run]
                     [--model-id ID] [--model-revision REV] [--push|--no-push]

  --registry HOST        registry login server (default: $REGISTRY), e.g. myacr.azurecr.io
  --allow-dirty          build from a tree with uncommitted changes; the tag gets "-dirty"
  --dry-run              print every command ("+ " first) instead of running it
  --model-id ID          Hugging Face model baked into the image (default: the Dockerfile's)
  --model-revision REV   hub commit of that model (default: the Dockerfile's pinned one)
  --push                 push and update knative/overlays/prod (default)
  --no-push              build into the local Docker engine only; no login, overlay untouched

The tag is the commit: git rev-parse --short=12 HEAD.
EOF
}

die() {
  echo "build-push.sh: $*" >&2
  exit 1
}

IMAGE_NAME=sentiment
OVERLAY_DIR=knative/overlays/prod
PLATFORM=linux/amd64

registry="${REGISTRY:-}"
allow_dirty=false
dry_run=false
push=true
model_id=""
model_revision=""

# Value of an option that takes one; fails when it is missing.
option_value() {
  [[ $# -ge 2 && -n $2 && $2 != --* ]] || die "$1 needs a value (see --help)"
  printf '%s' "$2"
}

parse_args() {
  while (($#)); do
    case "$1" in
      --registry) registry=$(option_value "$@"); shift 2 ;;
      --model-id) model_id=$(option_value "$@"); shift 2 ;;
      --model-revision) model_revision=$(option_value "$@"); shift 2 ;;
      --allow-dirty) allow_dirty=true; shift ;;
      --dry-run) dry_run=true; shift ;;
      --push) push=true; shift ;;
      --no-push) push=false; shift ;;
      -h | --help) usage; exit 0 ;;
      *) die "unknown argument '$1' (see --help)" ;;
    esac
  done
  [[ -n $registry ]] || die "no registry: pass --registry NAME.azurecr.io or set REGISTRY"
  [[ $registry =~ ^[a-z0-9][a-z0-9.-]*(:[0-9]+)?$ ]] \
    || die "registry '$registry' is not a lower-case login server such as myacr.azurecr.io"
}

# Runs a command, or with --dry-run prints it (shell-quoted, one line) instead.
run() {
  if $dry_run; then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# The image tag: the commit, with "-dirty" when uncommitted changes are allowed in.
image_tag() {
  git rev-parse --verify --quiet HEAD >/dev/null \
    || die "no commit yet: the image tag is the commit SHA, so commit first"
  local sha
  sha=$(git rev-parse --short=12 HEAD)
  if [[ -z $(git status --porcelain) ]]; then
    printf '%s' "$sha"
  elif $allow_dirty; then
    printf '%s-dirty' "$sha"
  else
    die "the working tree has uncommitted changes: commit them, or pass --allow-dirty (tag gets -dirty)"
  fi
}

is_acr() {
  [[ $registry == *.azurecr.io ]]
}

check_tools() {
  $dry_run && return 0
  command -v docker >/dev/null || die "docker not found: install Docker (with the buildx plugin)"
  docker buildx version >/dev/null 2>&1 || die "docker buildx not found: install the Docker buildx plugin"
  if $push && is_acr; then
    command -v az >/dev/null || die "az not found: install the Azure CLI and run 'az login'"
  fi
  return 0
}

build_image() {
  local image=$1 tag=$2
  local args=(--platform "$PLATFORM")
  args+=(--build-arg "VCS_REF=$(git rev-parse HEAD)")
  local origin
  if origin=$(git remote get-url origin 2>/dev/null); then
    args+=(--build-arg "SOURCE_URL=$origin")
  fi
  [[ -z $model_id ]] || args+=(--build-arg "MODEL_ID=$model_id")
  [[ -z $model_revision ]] || args+=(--build-arg "MODEL_REVISION=$model_revision")
  args+=(--label "org.opencontainers.image.version=$tag")
  args+=(--label "org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)")
  args+=(-t "$image")
  if $push; then args+=(--push); else args+=(--load); fi
  run docker buildx build "${args[@]}" .
}

# Without kustomize: rewrite newName/newTag of the `- name: sentiment` entry of the
# `images:` block, the layout `kustomize edit set image` itself writes. Fails unless both
# lines were found exactly once.
set_image_with_awk() {
  local file=$1 new_name=$2 new_tag=$3
  local edited="$file.tmp.$$"
  awk -v image="$IMAGE_NAME" -v new_name="$new_name" -v new_tag="$new_tag" '
    /^images:[[:space:]]*$/ { in_images = 1; print; next }
    in_images && /^[^[:space:]#-]/ { in_images = 0; in_entry = 0 }
    in_images && /^[[:space:]]*-[[:space:]]/ {
      in_entry = ($0 ~ "^[[:space:]]*-[[:space:]]+name:[[:space:]]*\"?" image "\"?[[:space:]]*$")
    }
    in_entry && /^[[:space:]]*newName:/ {
      sub(/newName:.*/, "newName: " new_name); names++
    }
    in_entry && /^[[:space:]]*newTag:/ {
      sub(/newTag:.*/, "newTag: \"" new_tag "\""); tags++
    }
    { print }
    END { exit !(names == 1 && tags == 1) }
  ' "$file" >"$edited" || {
    rm -f "$edited"
    die "$file: no 'images: - name: $IMAGE_NAME' entry with newName and newTag lines (or install kustomize)"
  }
  mv "$edited" "$file"
}

update_overlay() {
  local image=$1 tag=$2
  local kustomization="$OVERLAY_DIR/kustomization.yaml"
  [[ -f $kustomization ]] || die "$kustomization not found: run from the repository root"
  if command -v kustomize >/dev/null; then
    if $dry_run; then
      printf '+ (cd %q && kustomize edit set image %q)\n' "$OVERLAY_DIR" "$IMAGE_NAME=$image"
    else
      (cd "$OVERLAY_DIR" && kustomize edit set image "$IMAGE_NAME=$image")
    fi
  else
    echo "# kustomize not found: editing the images: block of $kustomization with awk"
    run set_image_with_awk "$kustomization" "${image%:*}" "$tag"
  fi
}

main() {
  parse_args "$@"
  cd "$(dirname "${BASH_SOURCE[0]}")"
  local tag image
  tag=$(image_tag)
  image="$registry/$IMAGE_NAME:$tag"
  check_tools
  if $push && is_acr; then
    run az acr login --name "${registry%%.*}"
  fi
  build_image "$image" "$tag"
  if $push; then
    update_overlay "$image" "$tag"
    if $dry_run; then
      echo "dry run: nothing was built, pushed or edited"
    else
      echo "pushed $image and set it in $OVERLAY_DIR/kustomization.yaml (commit that change)"
    fi
    echo "next: knative/scripts/deploy.sh --image $image"
  else
    echo "built $image into the local Docker engine (not pushed; overlay unchanged)"
  fi
}

main "$@"
