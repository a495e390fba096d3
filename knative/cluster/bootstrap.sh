#!/usr/bin/env bash
# Prepares an AKS cluster for the sentiment service: Istio, Knative Serving, net-istio, the
# cluster-wide Knative settings; optionally creates the resource group, ACR and AKS cluster first.
set -euo pipefail
# shellcheck source=knative/scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

# Pinned together: net-istio follows the Serving minor; Istio is the line net-istio is tested
# with (net-istio release notes); Serving 1.23 needs Kubernetes >= 1.34.
readonly KNATIVE_VERSION=1.23.0
readonly NET_ISTIO_VERSION=1.23.0
readonly ISTIO_VERSION=1.29.2
readonly KUBERNETES_VERSION=1.34
readonly SERVING_RELEASE="https://github.com/knative/serving/releases/download/knative-v${KNATIVE_VERSION}"
readonly NET_ISTIO_RELEASE="https://github.com/knative-extensions/net-istio/releases/download/knative-v${NET_ISTIO_VERSION}"
# Nodes: 8 vCPU / 32 GiB, of which AKS leaves 7.82 CPU and ~31.3 GiB allocatable. A sentiment pod
# requests 2.125 CPU with its sidecars (app 2, istio-proxy 0.1, queue-proxy 0.025): three per node
# beside the DaemonSets. Both environments at max-scale (10 + 2 pods) take four nodes, the Istio and
# Knative control planes a fifth; two stay up so the platform and a first pod never wait for a node.
readonly NODE_VM_SIZE=Standard_D8s_v5
readonly NODE_MAX_PODS=50
readonly NODE_MIN_COUNT=2
readonly NODE_MAX_COUNT=5
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly HERE

usage() {
  cat <<USAGE
Usage: $(basename "$0") [--create-cluster --resource-group RG --cluster NAME --acr ACR [--location L]]
                        [--domain SUFFIX] [--host HOST] [--env dev|prod] [--dry-run]

Installs Istio ${ISTIO_VERSION} (istioctl, with Istio CNI), Knative Serving ${KNATIVE_VERSION} and
net-istio ${NET_ISTIO_VERSION} on the current kubectl context, then patches config-network,
config-observability (and config-domain), and waits until all is ready.
  --create-cluster    first create the resource group, the ACR and an AKS ${KUBERNETES_VERSION} cluster
                      (${NODE_MIN_COUNT}..${NODE_MAX_COUNT} x ${NODE_VM_SIZE}, cluster autoscaler)
  --resource-group RG, --cluster NAME, --acr ACR, --location L (default westeurope)
  --domain SUFFIX     default domain of Knative routes (config-domain), e.g. apps.example.com
  --host HOST         claim HOST for the namespace of --env (ClusterDomainClaim for its DomainMapping)
  --env dev|prod      namespace the --host claim is for (default: prod)
  --dry-run           print every az / istioctl / kubectl command instead of running it
USAGE
}

create_cluster=0
resource_group=""
cluster=""
acr=""
location=westeurope
domain=""
host=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --create-cluster) create_cluster=1; shift ;;
    --resource-group) [[ $# -ge 2 ]] || die "--resource-group needs a value"; resource_group="$2"; shift 2 ;;
    --cluster) [[ $# -ge 2 ]] || die "--cluster needs a value"; cluster="$2"; shift 2 ;;
    --acr) [[ $# -ge 2 ]] || die "--acr needs a value"; acr="$2"; shift 2 ;;
    --location) [[ $# -ge 2 ]] || die "--location needs a value"; location="$2"; shift 2 ;;
    --domain) [[ $# -ge 2 ]] || die "--domain needs a value"; domain="$2"; shift 2 ;;
    --host) [[ $# -ge 2 ]] || die "--host needs a value"; host="$2"; shift 2 ;;
    *) common_option "$@" || die "unknown option '$1' (see --help)"; shift "$SHIFT_BY" ;;
  esac
done

create_aks() {
  [[ -n "$resource_group" && -n "$cluster" && -n "$acr" ]] ||
    die "--create-cluster needs --resource-group, --cluster and --acr"
  require az "https://learn.microsoft.com/cli/azure/install-azure-cli"
  run az group create --name "$resource_group" --location "$location"
  run az acr create --resource-group "$resource_group" --name "$acr" --sku Standard
  # One node pool, scaled by the cluster autoscaler between NODE_MIN_COUNT and NODE_MAX_COUNT
  # (sizes above; tests/test_knative.py recomputes them from the rendered pods).
  run az aks create --resource-group "$resource_group" --name "$cluster" --location "$location" \
    --kubernetes-version "$KUBERNETES_VERSION" --node-vm-size "$NODE_VM_SIZE" --max-pods "$NODE_MAX_PODS" \
    --node-count "$NODE_MIN_COUNT" --enable-cluster-autoscaler --min-count "$NODE_MIN_COUNT" --max-count "$NODE_MAX_COUNT" \
    --enable-managed-identity --attach-acr "$acr" --generate-ssh-keys
  run az aks get-credentials --resource-group "$resource_group" --name "$cluster" --overwrite-existing
}

install_istio() {
  if ((DRY_RUN == 0)); then
    require istioctl "https://istio.io/latest/docs/setup/getting-started/#download"
    istioctl version --remote=false 2>/dev/null | grep -q "$ISTIO_VERSION" ||
      die "istioctl must be version $ISTIO_VERSION (istioctl version --remote=false)"
  fi
  # Istio CNI replaces the privileged istio-init container (namespaces enforce PSS baseline).
  # externalTrafficPolicy Local: the gateway sees client addresses (per-client rate limiting).
  run istioctl install -y --set profile=default --set components.cni.enabled=true \
    --set values.gateways.istio-ingressgateway.externalTrafficPolicy=Local
  run kubectl wait --for=condition=Available --timeout=300s deployment --all --namespace istio-system
}

install_knative() {
  run kubectl apply -f "$SERVING_RELEASE/serving-crds.yaml"
  run kubectl wait --for=condition=Established --timeout=120s \
    crd/services.serving.knative.dev crd/domainmappings.serving.knative.dev \
    crd/clusterdomainclaims.networking.internal.knative.dev
  run kubectl apply -f "$SERVING_RELEASE/serving-core.yaml"
  # The activator must carry a mesh identity to reach pods of a STRICT namespace.
  run kubectl label namespace knative-serving istio-injection=enabled --overwrite
  run kubectl apply -f "$NET_ISTIO_RELEASE/net-istio.yaml"
  run kubectl apply -f "$HERE/knative-serving-peer-authentication.yaml"
  run kubectl patch configmap config-network --namespace knative-serving --type merge \
    --patch-file "$HERE/config-network.patch.yaml"
  # Knative's own metrics (off by default since Serving 1.19); observability/ owns the keys.
  run kubectl patch configmap config-observability --namespace knative-serving --type merge \
    --patch-file "$KNATIVE_DIR/../observability/k8s/config-observability-patch.yaml"
  if [[ -n "$domain" ]]; then
    run kubectl patch configmap config-domain --namespace knative-serving --type merge \
      --patch "{\"data\":{\"$domain\":\"\"}}"
  fi
  # Pods created before the namespace label have no sidecar yet.
  run kubectl rollout restart deployment --namespace knative-serving
  run kubectl wait --for=condition=Available --timeout=300s deployment --all --namespace knative-serving
}

claim_host() {
  local claim
  claim="apiVersion: networking.internal.knative.dev/v1alpha1
kind: ClusterDomainClaim
metadata:
  name: $host
spec:
  namespace: $(namespace)"
  if ((DRY_RUN)); then
    printf "kubectl apply -f - <<'YAML'\n%s\nYAML\n" "$claim"
  else
    kubectl apply -f - <<<"$claim"
  fi
}

require kubectl "https://kubernetes.io/docs/tasks/tools/"
if ((create_cluster)); then create_aks; fi
install_istio
install_knative
if [[ -n "$host" ]]; then claim_host; fi
run kubectl get service istio-ingressgateway --namespace istio-system
