"""Command line: `python -m knative.plan profile | simulate | recommend`.

    profile    measure one pod on this machine (k6), write a profile JSON; --validate also runs
               one pod open loop at 30/60/90% of capacity and prints k6 beside the pod model
    validate   that open-loop check alone, for a profile measured earlier on this machine
    simulate   run a traffic shape through a revision with the overlay's settings (or --set ...)
    recommend  search for the cheapest settings meeting an SLO; write a kustomize patch and a chart
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from knative.plan import annotations, profile, report, traffic
from knative.plan.annotations import Autoscaling, ManifestError
from knative.plan.pod import ColdStart, PodModel, ProfileError
from knative.plan.search import Search, Slo
from knative.plan.simulate import simulate

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PROFILE = Path(__file__).resolve().parent / "profiles" / "epyc-2vcpu-avx2.json"
DEFAULT_OVERLAY = REPO / "knative" / "overlays" / "prod"
VERIFY_SEEDS = (2, 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m knative.plan", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    _add_profile(verbs.add_parser("profile", help="measure one pod on this machine"))
    _add_validate(verbs.add_parser("validate", help="check a profile's pod model against the real service"))
    _add_simulate(verbs.add_parser("simulate", help="simulate a revision under a traffic shape"))
    _add_recommend(verbs.add_parser("recommend", help="cheapest settings that meet an SLO"))
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except (ManifestError, ProfileError, traffic.TrafficError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


# --- profile ------------------------------------------------------------------------------------


def _add_profile(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", type=Path,
                        help="built artifact or checkpoint to serve (default: build one with DistilBERT-base's shape and random weights)")
    parser.add_argument("--out", type=Path, required=True, help="profile JSON to write")
    parser.add_argument("--shapes", default="1,16", help="texts per request, comma-separated (default 1,16)")
    parser.add_argument("--seconds", type=int, default=10, help="k6 run length per in-flight count")
    parser.add_argument("--max-in-flight", type=int,
                        help="stop the closed-loop points at this many requests in flight (default: the pod's request threads)")
    parser.add_argument("--starts", type=int, default=5, help="process starts timed to /ready")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="service setting for the measured pod (e.g. PRECISION=fp32); repeatable")
    parser.add_argument("--validate", action="store_true",
                        help="then run one pod open loop at 30/60/90%% of capacity and print k6 beside the model")
    parser.add_argument("--step-seconds", type=int, default=30, help="length of each open-loop step")
    parser.set_defaults(run=_run_profile)


def _run_profile(args: argparse.Namespace) -> int:
    overrides = dict(item.split("=", 1) for item in args.env)
    shapes = [int(s) for s in args.shapes.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="plan-profile-") as tmp:
        workdir = Path(tmp)
        bench = profile.load_benchmark()
        model_dir = args.model_dir or _build_artifact(bench, workdir)
        measured = profile.measure(model_dir, shapes, args.seconds, args.starts, overrides, workdir,
                                   profile.command_line(), args.max_in_flight)
        profile.save(measured, args.out)
        print(f"wrote {args.out}")
        _print_pod_model(measured, shapes)
        if args.validate:
            _print_validation(bench, measured, model_dir, overrides, args.step_seconds, workdir)
    return 0


def _build_artifact(bench, workdir: Path) -> Path:
    print("building an artifact of DistilBERT-base's shape (random weights) ...")
    return bench.prepare(None, None, workdir)[1]


def _print_validation(bench, measured: dict, model_dir: Path, overrides: dict[str, str], step_seconds: int,
                      workdir: Path) -> None:
    from knative.plan import validate

    steps, cpus = validate.check(bench, measured, model_dir, overrides, step_seconds, workdir)
    print(validate.report(steps, cpus, measured["cpu"]["summary"]))


# --- validate ------------------------------------------------------------------------------------


def _add_validate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", type=Path, default=DEFAULT_PROFILE, help="profile JSON (default: %(default)s)")
    parser.add_argument("--model-dir", type=Path,
                        help="the artifact the profile measured (default: build one with DistilBERT-base's shape and random weights)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="service setting the profile was measured with; repeatable")
    parser.add_argument("--step-seconds", type=int, default=30, help="length of each open-loop step")
    parser.set_defaults(run=_run_validate)


def _run_validate(args: argparse.Namespace) -> int:
    """One pod open loop at 30/60/90% of the profile's capacity, k6 beside the pod model. The
    profile must describe this machine and this artifact: the fingerprints are compared."""
    measured = profile.load(args.profile)
    overrides = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory(prefix="plan-validate-") as tmp:
        workdir = Path(tmp)
        bench = profile.load_benchmark()
        model_dir = args.model_dir or _build_artifact(bench, workdir)
        served = profile.service_description(model_dir, overrides)
        if served["fingerprint"] != measured["service"]["fingerprint"]:
            raise ProfileError(f"{args.profile} measured model {measured['service']['fingerprint'][:12]},"
                               f" {model_dir} holds {served['fingerprint'][:12]}: validate against the artifact it measured")
        print(f"profile {args.profile.name}: measured {measured['measured_at']} on {measured['cpu']['summary']};"
              f" this machine: {profile.cpu_info()['summary']}")
        _print_validation(bench, measured, model_dir, overrides, args.step_seconds, workdir)
    return 0


def _print_pod_model(measured: dict, shapes: list[int]) -> None:
    """The pod model's own prediction of the closed-loop curve, beside the measurement."""
    for texts in shapes:
        pod = PodModel.from_profile(measured, texts)
        print(f"pod model, {texts} text(s): capacity {pod.capacity_rps:.1f} req/s, overlapping part"
              f" {1000 * pod.overlap_seconds:.1f} ms; closed loop measured / model:")
        for point in measured["shapes"][str(texts)]["points"]:
            rate, latency = pod.closed_loop(point["in_flight"])
            print(f"  {point['in_flight']:>3} in flight: {point['requests_per_second']:7.1f} / {rate:7.1f} req/s,"
                  f" mean {point['latency_ms']['avg']:7.1f} / {1000 * latency:7.1f} ms")


# --- simulate and recommend: shared options ---------------------------------------------------------


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", type=Path, default=DEFAULT_PROFILE, help="profile JSON (default: %(default)s)")
    parser.add_argument("--texts", type=int, default=1, help="texts per request: which profiled shape (default 1)")
    parser.add_argument("--traffic", required=True, help="traffic shape, e.g. burst:rate=200,idle=60,length=300 (see docs)")
    parser.add_argument("--overlay", type=Path, default=DEFAULT_OVERLAY,
                        help="kustomize overlay whose Knative Service holds the current settings (default: %(default)s)")
    parser.add_argument("--service", help="name of the Knative Service in the overlay (default: the only one)")
    parser.add_argument("--scheduling-seconds", type=float, default=1.0,
                        help="pod scheduling, sandbox and sidecar start before the image pull (default 1.0)")
    parser.add_argument("--image-mb", type=float, default=620.0, help="image size to pull (default 620, docs/image.md)")
    parser.add_argument("--pull-mb-per-second", type=float, default=100.0, help="registry pull rate (default 100)")
    parser.add_argument("--image-cached", action="store_true", help="nodes already hold the image: no pull")
    parser.add_argument("--start", choices=("auto", "zero", "warm", "created"), default="auto",
                        help="revision state at t=0: auto = warm at min-scale, else scaled to zero")
    parser.add_argument("--seed", type=int, default=1, help="seed of arrivals and service times")


def _inputs(args: argparse.Namespace):
    measured = profile.load(args.profile)
    pod = PodModel.from_profile(measured, args.texts)
    cold_start = ColdStart(process_start_seconds=profile.process_start_seconds(measured),
                           scheduling_seconds=args.scheduling_seconds, image_mb=args.image_mb,
                           pull_mb_per_second=args.pull_mb_per_second, image_cached=args.image_cached)
    current, service = annotations.from_overlay(args.overlay, args.service)
    shape = traffic.parse(args.traffic, args.seed)
    print(f"profile {args.profile.name}: {measured['cpu']['summary']}, {measured['service']['backend']}"
          f" {measured['service']['precision']}, {args.texts} text(s)/request: capacity {pod.capacity_rps:.1f} req/s per pod")
    print(f"{cold_start.describe()}")
    print(f"traffic {shape.spec}: {shape.arrivals.size:,} requests over {shape.duration:g} s,"
          f" mean {shape.mean_rate:.1f} req/s, peak {shape.peak_rate():.1f} req/s (10 s)")
    return measured, pod, cold_start, current, service, shape


# --- simulate ------------------------------------------------------------------------------------


def _add_simulate(parser: argparse.ArgumentParser) -> None:
    _add_common(parser)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a setting of the overlay: an annotation name without its prefix"
                             " (target, max-scale, ...) or containerConcurrency, timeoutSeconds; repeatable")
    parser.add_argument("--chart", type=Path, help="PNG of pods and p99 over time")
    parser.set_defaults(run=_run_simulate)


def apply_overrides(settings: Autoscaling, items: list[str]) -> Autoscaling:
    fields = {**{name: spec for name, spec in annotations.ANNOTATIONS.items()},
              "containerConcurrency": ("container_concurrency", int), "timeoutSeconds": ("timeout_seconds", float)}
    changes = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in fields:
            raise ValueError(f"--set {item}: unknown setting {name!r} (one of {', '.join(fields)})")
        field, parse = fields[name]
        changes[field] = parse(value)
    return settings.replace(**changes).validate()


def _run_simulate(args: argparse.Namespace) -> int:
    measured, pod, cold_start, current, _, shape = _inputs(args)
    settings = apply_overrides(current, args.set)
    print(f"settings: {annotations.describe(settings)}")
    result = simulate(shape, pod, settings, cold_start, start=args.start, seed=args.seed)
    print(report.figure_rows({"simulated": result}))
    print(report.pods_over_time(result, every=max(1, int(shape.duration) // 40)))
    print(f"simulated {shape.duration:g} s of traffic ({result.requests:,} requests) in {result.wall_seconds:.2f} s")
    if args.chart:
        title = f"{shape.spec} on {measured['cpu']['summary']}"
        report.chart({"simulated": result}, args.chart, title)
        print(f"chart: {args.chart}")
    return 0


# --- recommend -----------------------------------------------------------------------------------


def _add_recommend(parser: argparse.ArgumentParser) -> None:
    _add_common(parser)
    parser.add_argument("--slo-p99-ms", type=float, required=True, help="p99 latency objective over every request")
    parser.add_argument("--error-budget", type=float, default=0.001, help="share of 503 + 504 allowed (default 0.001)")
    parser.add_argument("--patch", type=Path, required=True, help="kustomize patch to write (YAML)")
    parser.add_argument("--chart", type=Path, help="PNG: pods and p99 over time, recommended vs current (default: beside the patch)")
    parser.set_defaults(run=_run_recommend)


def _run_recommend(args: argparse.Namespace) -> int:
    measured, pod, cold_start, current, service, shape = _inputs(args)
    slo = Slo(args.slo_p99_ms, args.error_budget)
    print(f"current ({_shown_path(args.overlay)}): {annotations.describe(current)}")
    print(f"SLO: {slo.describe()}; searching ...")
    started = time.perf_counter()
    checks = tuple((traffic.parse(args.traffic, seed), seed) for seed in VERIFY_SEEDS)
    search = Search(shape, pod, cold_start, slo, current, measured["service"]["threads"], seed=args.seed, checks=checks,
                    workers=len(os.sched_getaffinity(0)))
    with search:
        best = search.best()
        print(f"searched {len(search.results)} settings in {time.perf_counter() - started:.0f} s"
              f" ({search.workers} processes side by side)")
        recommended, existing = search.run(best), search.run(current)
        print(f"recommended: {annotations.describe(best)}")
        print(report.figure_rows({"current": existing, "recommended": recommended}))
        verdict = "meets" if search.met(best) else "does NOT meet (no setting in the grid does)"
        print(f"the recommendation {verdict} the SLO on every draw; current settings"
              f" {'meet' if search.met(current) else 'miss'} it")
        for seed, again in zip(VERIFY_SEEDS, search.check(best)):
            print(f"  check with seed {seed}: {report.short_figures(again)}")
        header = _patch_header(args, measured, shape, slo, cold_start, existing, recommended)
        notes = {_annotation_name(name): _note(kind, _shown(name, value), result, slo)
                 for name, (kind, value, result) in search.alternatives(best).items()}
        notes["initial-scale"] = "not searched: applies only when a revision is created"
        args.patch.parent.mkdir(parents=True, exist_ok=True)
        args.patch.write_text(annotations.kustomize_patch(service["metadata"]["name"], best, header, notes))
        print(f"patch: {args.patch} (add it to the overlay's kustomization.yaml: patches: - path: {args.patch.name})")
        chart_path = args.chart or args.patch.with_suffix(".png")
        report.chart({"recommended": recommended, "current": existing}, chart_path,
                     f"{shape.spec} on {measured['cpu']['summary']}\nSLO {slo.describe()}", slo.p99_ms)
        print(f"chart: {chart_path}")
        return 0


def _shown(field: str, value) -> str | None:
    """A setting's value as its annotation writes it (percentages, durations)."""
    if value is None:
        return None
    if field == "container_concurrency":
        return str(value)
    written = annotations.annotation_values(Autoscaling().replace(**{field: value}))
    return written.get(_annotation_name(field), "unset")


def _note(kind: str, value: str | None, result, slo: Slo) -> str:
    if kind == "changed":
        return f"was {value}; with {value}: {report.short_figures(result)}"
    if value is None:
        return "kept: no other value tried costs less"
    verdict = "costs less but misses the SLO" if not slo.met(result) else "costs less"
    return f"kept: {value} {verdict} ({report.short_figures(result)})"


def _shown_path(path: Path) -> Path:
    """A path as the user would type it from here."""
    try:
        return path.resolve().relative_to(Path.cwd())
    except ValueError:
        return path


def _annotation_name(field: str) -> str:
    if field == "container_concurrency":
        return "containerConcurrency"
    return next(name for name, (f, _) in annotations.ANNOTATIONS.items() if f == field)


def _patch_header(args, measured, shape, slo, cold_start, existing, recommended) -> list[str]:
    return [
        "Autoscaling settings recommended by the capacity planner:",
        f"  {profile.command_line()}",
        f"Profile {args.profile.name}: {measured['cpu']['summary']}, {measured['service']['backend']}"
        f" {measured['service']['precision']}, measured {measured['measured_at']}",
        f"Traffic {shape.spec}; SLO {slo.describe()}; {cold_start.describe()}.",
        f"Simulated, current settings:     {report.short_figures(existing)}",
        f"Simulated, these settings:       {report.short_figures(recommended)}",
        "Beside each value: with the value changed, the figures with the old value; kept, the cheapest",
        "other value tried and why it was not taken.",
        "",
    ]
