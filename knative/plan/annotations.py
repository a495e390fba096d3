"""The autoscaling settings of a Knative revision: read from a rendered manifest, written back as a
kustomize patch.

`Autoscaling` holds every value the KPA model reads, with Knative Serving's defaults
(config-autoscaler in pkg/autoscaler/config/config.go) where a revision sets nothing. The
revision's own values come from the Knative Service that `kubectl kustomize` renders for an
overlay, at run time: the manifests stay the one place those values live.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

PREFIX = "autoscaling.knative.dev/"
KPA_CLASS = "kpa.autoscaling.knative.dev"
TARGET_MIN = 0.01  # pkg/apis/autoscaling/register.go: TargetMin


class ManifestError(ValueError):
    """The manifest cannot be modelled (not a KPA concurrency revision, a bad value, ...)."""


@dataclass(frozen=True)
class Autoscaling:
    """Revision annotations, containerConcurrency and the answer deadline, plus the cluster-wide
    config-autoscaler keys the revision cannot set (Knative's defaults)."""

    container_concurrency: int = 0
    target: float | None = None  # annotation target; None = from containerConcurrency or 100
    target_utilization: float = 0.7  # annotation target-utilization-percentage / 100
    min_scale: int = 0
    max_scale: int = 0  # 0 = unbounded
    initial_scale: int = 1
    activation_scale: int = 0  # 0 = unset
    scale_down_delay: float = 0.0
    window: float = 60.0
    panic_window_percentage: float = 10.0
    panic_threshold_percentage: float = 200.0
    scale_to_zero_pod_retention: float = 0.0
    target_burst_capacity: float = 211.0
    timeout_seconds: float = 300.0  # timeoutSeconds, or responseStartTimeoutSeconds when smaller
    # config-autoscaler only:
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    scale_to_zero_grace_period: float = 30.0
    enable_scale_to_zero: bool = True
    container_concurrency_target_default: float = 100.0

    @property
    def total_value(self) -> float:
        """ResolveMetricTarget's `total` (pkg/reconciler/autoscaling/resources/target.go): the
        per-pod concurrency the autoscaler treats as a pod's capacity."""
        total = float(self.container_concurrency) or self.container_concurrency_target_default
        if self.target is not None:
            total = self.target
            if self.container_concurrency:
                total = min(self.target, float(self.container_concurrency))
        return total

    @property
    def target_value(self) -> float:
        """ResolveMetricTarget's `target`: the in-flight requests per pod the autoscaler aims at."""
        return max(TARGET_MIN, self.total_value * self.target_utilization)

    @property
    def panic_threshold(self) -> float:
        return self.panic_threshold_percentage / 100.0

    @property
    def panic_window(self) -> int:
        """resources.MakeMetric: window x percentage, rounded to whole seconds, at least 1 s."""
        return max(1, round(self.window * self.panic_window_percentage / 100.0))

    def replace(self, **changes) -> Autoscaling:
        return dataclasses.replace(self, **changes)

    def validate(self) -> Autoscaling:
        """Knative's admission ranges; a value out of them would be rejected by the webhook."""
        problems = []
        if not 6 <= self.window <= 3600 or self.window != int(self.window):
            problems.append(f"window {self.window:g}s must be whole seconds in 6s..1h")
        if not 1 <= self.panic_window_percentage <= 100:
            problems.append(f"panic-window-percentage {self.panic_window_percentage:g} must be in 1..100")
        if not 110 <= self.panic_threshold_percentage <= 1000:
            problems.append(f"panic-threshold-percentage {self.panic_threshold_percentage:g} must be in 110..1000")
        if not 0 < self.target_utilization <= 1:
            problems.append(f"target-utilization-percentage {100 * self.target_utilization:g} must be in (0, 100]")
        if self.target is not None and self.target < TARGET_MIN:
            problems.append(f"target {self.target:g} must be at least {TARGET_MIN}")
        if self.min_scale < 0 or self.max_scale < 0 or (self.max_scale and self.min_scale > self.max_scale):
            problems.append(f"min-scale {self.min_scale} / max-scale {self.max_scale} are inconsistent")
        if self.activation_scale == 1 or self.activation_scale < 0:
            problems.append(f"activation-scale {self.activation_scale} must be at least 2 when set")
        if not 0 <= self.scale_down_delay <= 3600:
            problems.append(f"scale-down-delay {self.scale_down_delay:g}s must be in 0s..1h")
        if self.target_burst_capacity < 0 and self.target_burst_capacity != -1:
            problems.append(f"target-burst-capacity {self.target_burst_capacity:g} must be -1 or >= 0")
        if self.container_concurrency < 0:
            problems.append(f"containerConcurrency {self.container_concurrency} must be >= 0")
        if problems:
            raise ManifestError("; ".join(problems))
        return self


# --- reading -------------------------------------------------------------------------------------

_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float:
    """A Go duration ("30s", "2m", "1m30s", "500ms") in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ManifestError(f"{text!r} is not a duration like 30s, 2m or 1h")
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def format_duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


def _percentage(text: str) -> float:
    return float(text) / 100.0


# annotation name (after the prefix) -> (Autoscaling field, parser)
ANNOTATIONS = {
    "target": ("target", float),
    "target-utilization-percentage": ("target_utilization", _percentage),
    "min-scale": ("min_scale", int),
    "max-scale": ("max_scale", int),
    "initial-scale": ("initial_scale", int),
    "activation-scale": ("activation_scale", int),
    "scale-down-delay": ("scale_down_delay", parse_duration),
    "window": ("window", parse_duration),
    "panic-window-percentage": ("panic_window_percentage", float),
    "panic-threshold-percentage": ("panic_threshold_percentage", float),
    "scale-to-zero-pod-retention-period": ("scale_to_zero_pod_retention", parse_duration),
    "target-burst-capacity": ("target_burst_capacity", float),
}


def from_service(service: dict) -> Autoscaling:
    """The autoscaling settings of a rendered Knative Service's revision template."""
    template = service.get("spec", {}).get("template", {})
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    spec = template.get("spec") or {}
    klass = annotations.get(PREFIX + "class", KPA_CLASS)
    metric = annotations.get(PREFIX + "metric", "concurrency")
    if klass != KPA_CLASS or metric != "concurrency":
        raise ManifestError(f"the planner models the KPA on concurrency; this revision uses class {klass}, metric {metric}")
    values: dict = {}
    for name, (field, parse) in ANNOTATIONS.items():
        if PREFIX + name in annotations:
            raw = str(annotations[PREFIX + name])
            try:
                values[field] = parse(raw)
            except ValueError as error:
                raise ManifestError(f"annotation {PREFIX}{name}: {raw!r}: {error}") from None
    if values.get("initial_scale") == 0:
        values.pop("initial_scale")  # allow-zero-initial-scale is false by default: Knative uses 1
    values["container_concurrency"] = int(spec.get("containerConcurrency", 0))
    # The deadline of an answer: this service answers in one JSON body, so its first byte is the
    # whole answer and responseStartTimeoutSeconds, when smaller, is the deadline that applies.
    timeouts = [float(spec.get("timeoutSeconds", 300))]
    if "responseStartTimeoutSeconds" in spec:
        timeouts.append(float(spec["responseStartTimeoutSeconds"]))
    values["timeout_seconds"] = min(timeouts)
    return Autoscaling(**values).validate()


def render_overlay(overlay: Path) -> list[dict]:
    """`kubectl kustomize OVERLAY`, parsed."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise ManifestError("kubectl is not installed: it renders the overlay (kubectl kustomize)")
    result = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise ManifestError(f"kubectl kustomize {overlay} failed: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def knative_service(docs: list[dict], name: str | None = None) -> dict:
    services = [d for d in docs if d.get("kind") == "Service" and str(d.get("apiVersion", "")).startswith("serving.knative.dev/")]
    if name is not None:
        services = [s for s in services if s["metadata"]["name"] == name]
    if len(services) != 1:
        raise ManifestError(f"expected one Knative Service{f' named {name}' if name else ''}, found {len(services)}")
    return services[0]


def from_overlay(overlay: Path, name: str | None = None) -> tuple[Autoscaling, dict]:
    """The settings of the overlay's Knative Service, and the Service itself."""
    service = knative_service(render_overlay(overlay), name)
    return from_service(service), service


# --- writing -------------------------------------------------------------------------------------


def annotation_values(settings: Autoscaling) -> dict[str, str]:
    """The revision annotations that express `settings` (only what a revision can set)."""
    values = {
        "class": KPA_CLASS,
        "metric": "concurrency",
        "target-utilization-percentage": f"{100 * settings.target_utilization:g}",
        "min-scale": str(settings.min_scale),
        "max-scale": str(settings.max_scale),
        "initial-scale": str(settings.initial_scale),
        "scale-down-delay": format_duration(settings.scale_down_delay),
        "window": format_duration(settings.window),
        "panic-window-percentage": f"{settings.panic_window_percentage:g}",
        "panic-threshold-percentage": f"{settings.panic_threshold_percentage:g}",
        "scale-to-zero-pod-retention-period": format_duration(settings.scale_to_zero_pod_retention),
        "target-burst-capacity": f"{settings.target_burst_capacity:g}",
    }
    if settings.target is not None:
        values["target"] = f"{settings.target:g}"
    if settings.activation_scale:
        values["activation-scale"] = str(settings.activation_scale)
    return values


def kustomize_patch(service_name: str, settings: Autoscaling, header: list[str], notes: dict[str, str]) -> str:
    """A patch of the Knative Service (kustomize `patches: - path: FILE`) setting every
    autoscaling value; `notes` maps an annotation name (or "containerConcurrency") to the
    comment written beside it."""
    lines = [f"# {line}" if line else "#" for line in header]
    lines += [
        "apiVersion: serving.knative.dev/v1",
        "kind: Service",
        "metadata:",
        f"  name: {service_name}",
        "spec:",
        "  template:",
        "    metadata:",
        "      annotations:",
    ]
    for name, value in annotation_values(settings).items():
        lines.append(_with_note(f'        {PREFIX}{name}: "{value}"', notes.get(name)))
    lines += ["    spec:", _with_note(f"      containerConcurrency: {settings.container_concurrency}",
                                       notes.get("containerConcurrency"))]
    return "\n".join(lines) + "\n"


def _with_note(line: str, note: str | None) -> str:
    return f"{line}  # {note}" if note else line


def describe(settings: Autoscaling) -> str:
    """One line: the values a reader compares first."""
    max_scale = settings.max_scale or math.inf
    target = "-" if settings.target is None else f"{settings.target:g}"
    return (f"target {target} at {100 * settings.target_utilization:g}%"
            f" (aim {settings.target_value:g} in flight/pod), containerConcurrency {settings.container_concurrency},"
            f" panic {settings.panic_threshold_percentage:g}% over {settings.panic_window}s,"
            f" window {settings.window:g}s, scale {settings.min_scale}..{max_scale:g}"
            f" (initial {settings.initial_scale}, activation {settings.activation_scale or '-'}),"
            f" scale-down-delay {settings.scale_down_delay:g}s, retention {settings.scale_to_zero_pod_retention:g}s,"
            f" target-burst-capacity {settings.target_burst_capacity:g}")
