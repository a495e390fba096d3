"""The planner from the command line: settings read from the rendered overlay, a simulation, a
recommendation written as a kustomize patch that renders, and the profile of a real pod."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from knative.plan import annotations, cli
from knative.plan.annotations import Autoscaling, ManifestError

REPO = Path(__file__).resolve().parents[1]
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (it renders the kustomize overlays)")


def write_profile(path: Path, capacity: float = 40.0) -> Path:
    """A profile as `profile` writes it: one shape, points up to saturation at `capacity`."""
    def point(in_flight: int, rps: float, p50: float) -> dict:
        return {"in_flight": in_flight, "requests": int(rps * 10), "requests_per_second": rps, "texts_per_second": rps,
                "failed_share": 0.0, "latency_ms": {"avg": p50 * 1.1, "min": p50 * 0.5, "p50": p50, "p90": p50 * 1.6,
                                                    "p95": p50 * 1.9, "p99": p50 * 3, "max": p50 * 4}}
    profile = {
        "format": 1, "measured_at": "2026-11-30T00:00:00+00:00", "command": "test",
        "cpu": {"model": "Test CPU", "vcpus": 2, "isa": ["avx2"], "summary": "2 vCPU Test CPU, AVX2, no AVX-512/VNNI"},
        "service": {"model_id": "m", "fingerprint": "f" * 64, "backend": "onnx", "precision": "int8", "workers": 1,
                    "threads": 32, "intra_op_threads": 2, "batching": True, "overrides": {}},
        "load_generator": "k6", "start_to_ready_seconds": [0.9, 1.0, 1.1],
        "shapes": {"1": {"texts_per_request": 1, "points": [
            point(1, 0.8 * capacity, 22.0), point(2, capacity, 45.0), point(4, capacity, 95.0)]}},
    }
    path.write_text(json.dumps(profile))
    return path


def copy_overlays(tmp_path: Path) -> Path:
    copy = tmp_path / "knative"
    shutil.copytree(REPO / "knative", copy, ignore=shutil.ignore_patterns("schemas", "scripts", "plan"))
    return copy


def add_patch(overlay: Path, patch: Path) -> None:
    kustomization = overlay / "kustomization.yaml"
    data = yaml.safe_load(kustomization.read_text())
    shutil.copy(patch, overlay / patch.name)
    data.setdefault("patches", []).append({"path": patch.name})
    kustomization.write_text(yaml.safe_dump(data))


def test_settings_are_read_from_the_service_with_knative_defaults():
    service = {"spec": {"template": {"metadata": {"annotations": {
        "autoscaling.knative.dev/target": "12", "autoscaling.knative.dev/target-utilization-percentage": "75",
        "autoscaling.knative.dev/scale-down-delay": "1m30s", "autoscaling.knative.dev/window": "2m",
        "autoscaling.knative.dev/max-scale": "7"}}, "spec": {"containerConcurrency": 16}}}}
    s = annotations.from_service(service)
    assert (s.target, s.target_utilization, s.scale_down_delay, s.window, s.max_scale) == (12, 0.75, 90, 120, 7)
    assert (s.container_concurrency, s.timeout_seconds, s.target_burst_capacity, s.panic_threshold_percentage) == (16, 300, 211, 200)
    assert s.target_value == pytest.approx(9)


def test_the_answer_deadline_is_the_smaller_of_the_two_timeouts():
    """A one-shot JSON answer's first byte is its whole answer: responseStartTimeoutSeconds,
    when smaller than timeoutSeconds, is the deadline after which the request is a 504."""
    def deadline(spec: dict) -> float:
        return annotations.from_service({"spec": {"template": {"spec": spec}}}).timeout_seconds
    assert deadline({"timeoutSeconds": 60, "responseStartTimeoutSeconds": 30}) == 30
    assert deadline({"timeoutSeconds": 20, "responseStartTimeoutSeconds": 30}) == 20
    assert deadline({"timeoutSeconds": 60}) == 60


@pytest.mark.parametrize("changes, message", [
    ({"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev"}, "KPA on concurrency"),
    ({"autoscaling.knative.dev/metric": "rps"}, "KPA on concurrency"),
    ({"autoscaling.knative.dev/window": "3s"}, "window"),
    ({"autoscaling.knative.dev/panic-threshold-percentage": "105"}, "panic-threshold"),
    ({"autoscaling.knative.dev/scale-down-delay": "soon"}, "duration"),
    ({"autoscaling.knative.dev/activation-scale": "1"}, "activation-scale"),
])
def test_settings_knative_would_reject_are_refused(changes, message):
    with pytest.raises(ManifestError, match=message):
        annotations.from_service({"spec": {"template": {"metadata": {"annotations": changes}}}})


@needs_kubectl
@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_overlay_renders_to_settings_the_model_accepts(overlay):
    rendered = annotations.render_overlay(REPO / "knative" / "overlays" / overlay)
    settings, service = annotations.from_overlay(REPO / "knative" / "overlays" / overlay)
    template = service["spec"]["template"]
    raw = template["metadata"]["annotations"]
    assert settings.container_concurrency == template["spec"].get("containerConcurrency", 0)
    assert settings.max_scale == int(raw.get("autoscaling.knative.dev/max-scale", 0))
    assert any(doc["kind"] == "Service" for doc in rendered)


@needs_kubectl
def test_patch_renders_in_the_overlay_and_reads_back_as_written(tmp_path):
    knative = copy_overlays(tmp_path)
    current, _ = annotations.from_overlay(knative / "overlays" / "prod")
    proposed = current.replace(container_concurrency=16, target=6, target_utilization=0.9, min_scale=1, max_scale=12,
                               initial_scale=1, activation_scale=2, scale_down_delay=120, window=30,
                               panic_window_percentage=20, panic_threshold_percentage=300,
                               scale_to_zero_pod_retention=60, target_burst_capacity=32)
    patch = tmp_path / "autoscaling.patch.yaml"
    patch.write_text(annotations.kustomize_patch("sentiment", proposed, ["a header"], {"target": "was 10; ..."}))
    assert "# a header" in patch.read_text() and '# was 10; ...' in patch.read_text()
    add_patch(knative / "overlays" / "prod", patch)
    settings, _ = annotations.from_overlay(knative / "overlays" / "prod")
    assert settings == proposed


@needs_kubectl
def test_simulate_prints_the_figures_and_its_time(tmp_path, capsys):
    profile = write_profile(tmp_path / "profile.json")
    chart = tmp_path / "sim.png"
    code = cli.main(["simulate", "--profile", str(profile), "--traffic", "burst:rate=60,idle=10,length=60,duration=200",
                     "--set", "max-scale=3", "--chart", str(chart)])
    out = capsys.readouterr().out
    assert code == 0
    assert "scale 0..3" in out and "p99 latency" in out and "pod-seconds" in out
    assert "pods (ready + starting) every 5 s: 0 0 " in out
    assert "simulated 200 s of traffic" in out
    assert chart.stat().st_size > 10_000


@needs_kubectl
def test_unknown_override_is_refused(tmp_path, capsys):
    profile = write_profile(tmp_path / "profile.json")
    code = cli.main(["simulate", "--profile", str(profile), "--traffic", "constant:rate=1,duration=10",
                     "--set", "speed=11"])
    assert code == 2 and "unknown setting 'speed'" in capsys.readouterr().err


@needs_kubectl
def test_recommend_writes_a_patch_that_meets_the_slo_and_renders(tmp_path, capsys):
    knative = copy_overlays(tmp_path)
    profile = write_profile(tmp_path / "profile.json")
    patch = tmp_path / "out" / "autoscaling.patch.yaml"
    code = cli.main(["recommend", "--profile", str(profile), "--overlay", str(knative / "overlays" / "prod"),
                     "--traffic", "step:from=10,to=80,at=60,duration=240", "--start", "warm",
                     "--slo-p99-ms", "400", "--error-budget", "0.001", "--patch", str(patch), "--image-cached"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "the recommendation meets the SLO" in out
    assert patch.with_suffix(".png").stat().st_size > 10_000
    text = patch.read_text()
    assert "Simulated, these settings:" in text and "2 vCPU Test CPU" in text
    add_patch(knative / "overlays" / "prod", patch)
    recommended, _ = annotations.from_overlay(knative / "overlays" / "prod")
    assert "recommended: " + annotations.describe(recommended) in out


@pytest.mark.slow
def test_profile_measures_a_real_pod_and_validates_the_model(tiny_artifact, tmp_path):
    """The profile verb end to end against a real Gunicorn serving a tiny model: closed-loop
    points from one request in flight to saturation, start-up times, the CPU and the model's
    fingerprint; then the open-loop check prints k6 beside the model (a figure, not a verdict)."""
    out = tmp_path / "profile.json"
    result = subprocess.run(
        [sys.executable, "-m", "knative.plan", "profile", "--model-dir", str(tiny_artifact), "--out", str(out),
         "--shapes", "1", "--seconds", "2", "--max-in-flight", "4", "--starts", "1", "--validate",
         "--step-seconds", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stderr
    profile = json.loads(out.read_text())
    manifest = json.loads((tiny_artifact / "manifest.json").read_text())
    assert profile["service"]["fingerprint"] == manifest["fingerprint"]
    assert "avx2" in profile["cpu"]["isa"] or "avx2" not in Path("/proc/cpuinfo").read_text()
    points = profile["shapes"]["1"]["points"]
    assert [p["in_flight"] for p in points][:2] == [1, 2]
    assert all(p["requests_per_second"] > 0 and p["latency_ms"]["p99"] >= p["latency_ms"]["p50"] for p in points)
    assert len(profile["start_to_ready_seconds"]) == 1
    assert "pod model against k6" in result.stdout and "within 25%" in result.stdout
    assert "CPUs used during the open-loop run: pod" in result.stdout


def test_validate_refuses_an_artifact_the_profile_did_not_measure(tiny_artifact, tmp_path, capsys):
    """The open-loop check compares the model of one pod with that same pod: another model's
    artifact is refused before any load is sent."""
    profile = write_profile(tmp_path / "profile.json")
    code = cli.main(["validate", "--profile", str(profile), "--model-dir", str(tiny_artifact)])
    assert code == 2 and "validate against the artifact it measured" in capsys.readouterr().err
