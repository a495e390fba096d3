"""Command line: `python -m model build | evaluate | bench | random-checkpoint | settings`.

    build              export a Hugging Face checkpoint to an ONNX artifact (fp32, int8 if it passes the int8 gate)
    evaluate           accuracy, batch-composition drift and the int8 gate of one engine against another
    bench              engine-level throughput and latency per backend/precision variant/batch size
    random-checkpoint  write a random-weight checkpoint (tests, benchmarks without real weights)
    settings           print every configuration variable with its default and meaning

Every command but `settings` needs the `build` extra: its code is `model.builder`, imported here
per command, so the serving package never imports it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from model.settings import ConfigurationError, Settings

BUILD_DATA = Path(__file__).resolve().parent / "builder" / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    _add_build(commands.add_parser("build", help="export a checkpoint to an ONNX artifact"))
    _add_evaluate(commands.add_parser("evaluate", help="accuracy and agreement of two engines on a labelled TSV"))
    _add_bench(commands.add_parser("bench", help="engine throughput and latency"))
    _add_random_checkpoint(commands.add_parser("random-checkpoint", help="write a random-weight checkpoint"))
    commands.add_parser("settings", help="print the configuration variables").set_defaults(run=_run_settings)
    args = parser.parse_args(argv)
    # Our own progress at INFO; third-party libraries (the quantizer is chatty) at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("model").setLevel(logging.INFO)
    try:
        return args.run(args) or 0
    except ModuleNotFoundError as error:
        if error.name not in ("torch", "transformers", "onnx", "huggingface_hub"):
            raise
        print(f"error: `python -m model {args.command}` needs the build extra ({error.name} is missing): "
              "pip install '.[build]'", file=sys.stderr)
        return 2
    except ConfigurationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _ints(value: str) -> list[int]:
    return [int(part) for part in _csv(value)]


# --- build -------------------------------------------------------------------------------------


def _add_build(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", type=Path, help="local Hugging Face checkpoint directory")
    source.add_argument("--model-id", help="Hugging Face hub model id (downloaded through the hub cache)")
    parser.add_argument("--revision", help="hub revision (commit, branch or tag) of --model-id")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", type=Path, help="artifact directory to write")
    target.add_argument("--artifact-cache-dir", type=Path,
                        help="build into DIR/<fingerprint>-b<generation>/ once (what the server does for a plain checkpoint)")
    parser.add_argument("--precisions", "--precision", type=_csv, default=["fp32", "int8"],
                        help="comma-separated: fp32,int8 (int8 only if it passes the int8 gate, else fp32)")
    parser.add_argument("--calibration-data", type=Path, default=BUILD_DATA / "rt-polarity-calibration.tsv",
                        help="sentences for the build's choices (TSV sentence<TAB>label or one a line)")
    parser.add_argument("--gate-data", type=Path, default=BUILD_DATA / "sst2-dev.tsv",
                        help="held-out sentences of the int8 gate's verdict (same formats)")
    parser.set_defaults(run=_run_build)


def _run_build(args: argparse.Namespace) -> int:
    from model.artifacts import download_checkpoint
    from model.builder.export import BuildError, build_artifact, build_into_cache

    logging.getLogger("model.engines").setLevel(logging.WARNING)  # one line per build phase, not per session

    if args.model_dir is not None:
        checkpoint, model_id, revision = args.model_dir, args.model_dir.resolve().name, args.revision
        if not (checkpoint / "config.json").is_file():
            raise ConfigurationError(f"--model-dir {checkpoint} is not a Hugging Face checkpoint (no config.json)")
    else:
        checkpoint = download_checkpoint(args.model_id, args.revision)
        model_id, revision = args.model_id, checkpoint.name
    options = {"precisions": tuple(args.precisions), "model_id": model_id, "revision": revision,
               "calibration_data": args.calibration_data, "verdict_data": args.gate_data}
    try:
        if args.out is not None:
            out, manifest = args.out, build_artifact(checkpoint, args.out, **options)
        else:
            out, manifest = build_into_cache(checkpoint, args.artifact_cache_dir, **options)
    except BuildError as error:
        print(f"error: build failed: {error}", file=sys.stderr)
        return 1
    for precision, entry in manifest["precisions"].items():
        print(f"{precision}: {out / entry['file']}  max |Δp| vs torch on check sentences {entry['max_abs_diff_vs_torch']:.2e}")
    if manifest["int8"] is not None:
        int8 = manifest["int8"]
        print(f"int8 {'shipped' if int8['shipped'] else 'NOT shipped'}: {int8['reason']} "
              f"(measured on {int8['measured_on']['isa']})")
        if int8["kept_fp32_roles"]:
            print(f"int8 keeps in fp32: {', '.join(int8['kept_fp32_roles'])}")
        for note in (int8["gate"]["verdict"] or int8["gate"]["calibration"])["notes"]:
            print(f"int8 gate note: {note}")
    print(f"artifact {out}  model {manifest['model_id']}  fingerprint {manifest['fingerprint'][:12]}  "
          f"labels {','.join(manifest['labels'])}  served by default: {manifest['recommended_precision']}")
    return 0


# --- evaluate ----------------------------------------------------------------------------------


def _add_evaluate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", type=Path, required=True, help="checkpoint or built artifact")
    parser.add_argument("--data", type=Path, required=True, help="TSV with header sentence<TAB>label (1 = positive)")
    parser.add_argument("--backend", default="onnx", choices=["onnx", "torch"])
    parser.add_argument("--precision", default=Settings.model_fields["precision"].default,
                        help="default: the service's default PRECISION (auto: what the artifact recommends)")
    parser.add_argument("--reference-backend", default=None, choices=["onnx", "torch"], help="default: --backend")
    parser.add_argument("--reference-precision", default="fp32")
    parser.add_argument("--batch-size", type=int, default=32, help="size of the mixed batches")
    parser.set_defaults(run=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from model.builder.measure import evaluate_engines

    report = evaluate_engines(
        args.model_dir, args.data, (args.backend, args.precision),
        (args.reference_backend or args.backend, args.reference_precision), args.batch_size,
    )
    print(report)
    return 0


# --- bench -------------------------------------------------------------------------------------


def _add_bench(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", type=Path, required=True,
                        help="built artifact (onnx rows) or checkpoint (torch rows)")
    parser.add_argument("--backends", type=_csv, default=["onnx"])
    parser.add_argument("--variants", "--precisions", type=_csv, default=["fp32", "int8-all", "int8"],
                        help="onnx: fp32, int8-all (every weight MatMul quantized here), int8 (the artifact's recipe); "
                        "torch: fp32, bf16")
    parser.add_argument("--recipe-from", type=Path,
                        help="another artifact whose int8 recipe (MatMuls kept in fp32, by role) is benched too")
    parser.add_argument("--batch-sizes", type=_ints, default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per row")
    parser.add_argument("--data", type=Path, default=BUILD_DATA / "sst2-dev.tsv",
                        help="sentences (TSV or one a line); default: SST-2 dev")
    parser.set_defaults(run=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    from model.builder.measure import benchmark

    print(benchmark(args.model_dir, args.backends, args.variants, args.batch_sizes, args.seconds, args.data,
                    args.recipe_from))
    return 0


# --- random-checkpoint and settings ------------------------------------------------------------


def _add_random_checkpoint(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shape", default="tiny", choices=["tiny", "distilbert-base"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--labels", type=_csv, default=["NEGATIVE", "POSITIVE"], help="comma-separated label names")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=_run_random_checkpoint)


def _run_random_checkpoint(args: argparse.Namespace) -> int:
    from model.builder.checkpoints import build_random_checkpoint

    path = build_random_checkpoint(args.out, labels=tuple(args.labels), shape=args.shape, seed=args.seed)
    print(f"random {args.shape} checkpoint with labels {','.join(args.labels)} written to {path}")
    return 0


def _run_settings(args: argparse.Namespace) -> int:
    from model.settings import settings_table

    print(settings_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
