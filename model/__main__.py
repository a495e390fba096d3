"""Command line: `python -m model build | evaluate | bench | random-checkpoint | settings`.

    build              export a Hugging Face checkpoint to an ONNX artifact (fp32, int8)
    evaluate           accuracy, agreement between two engines, batch-composition drift
    bench              engine-level throughput and latency per backend/precision/batch size
    random-checkpoint  write a random-weight checkpoint (tests, benchmarks without real weights)
    settings           print every configuration variable with its default and meaning
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from model.settings import ConfigurationError, Settings

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


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
    parser.add_argument("--out", type=Path, required=True, help="artifact directory to write")
    parser.add_argument("--precisions", "--precision", type=_csv, default=["fp32", "int8"], help="comma-separated: fp32,int8")
    parser.add_argument("--int8-recipe", default=None, help="int8 quantization recipe (see docs/engine.md)")
    parser.set_defaults(run=_run_build)


def _run_build(args: argparse.Namespace) -> int:
    from model.artifacts import download_checkpoint
    from model.export import INT8_RECIPE, BuildError, build_artifact

    if args.model_dir is not None:
        checkpoint, model_id, revision = args.model_dir, args.model_dir.resolve().name, args.revision
        if not (checkpoint / "config.json").is_file():
            raise ConfigurationError(f"--model-dir {checkpoint} is not a Hugging Face checkpoint (no config.json)")
    else:
        checkpoint = download_checkpoint(args.model_id, args.revision)
        model_id, revision = args.model_id, checkpoint.name
    try:
        manifest = build_artifact(checkpoint, args.out, tuple(args.precisions), model_id=model_id,
                                  revision=revision, int8_recipe=args.int8_recipe or INT8_RECIPE)
    except BuildError as error:
        print(f"error: build failed: {error}", file=sys.stderr)
        return 1
    for precision, entry in manifest["precisions"].items():
        print(f"{precision}: {args.out / entry['file']}  max |Δp| vs torch on check sentences {entry['max_abs_diff_vs_torch']:.2e}")
    print(f"artifact {args.out}  model {manifest['model_id']}  fingerprint {manifest['fingerprint'][:12]}  labels {','.join(manifest['labels'])}")
    return 0


# --- evaluate ----------------------------------------------------------------------------------


def _add_evaluate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", type=Path, required=True, help="checkpoint or built artifact")
    parser.add_argument("--data", type=Path, required=True, help="TSV with header sentence<TAB>label (1 = positive)")
    parser.add_argument("--backend", default="onnx", choices=["onnx", "torch"])
    parser.add_argument("--precision", default=Settings.model_fields["precision"].default,
                        help="default: the service's default PRECISION")
    parser.add_argument("--reference-backend", default=None, choices=["onnx", "torch"], help="default: --backend")
    parser.add_argument("--reference-precision", default="fp32")
    parser.add_argument("--batch-size", type=int, default=32, help="size of the mixed batches")
    parser.set_defaults(run=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from model.evaluation import evaluate_engines

    report = evaluate_engines(
        args.model_dir, args.data, (args.backend, args.precision),
        (args.reference_backend or args.backend, args.reference_precision), args.batch_size,
    )
    print(report)
    return 0


# --- bench -------------------------------------------------------------------------------------


def _add_bench(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", type=Path, required=True, help="checkpoint or built artifact")
    parser.add_argument("--backends", type=_csv, default=["onnx"])
    parser.add_argument("--precisions", type=_csv, default=["fp32", "int8"], help="combinations a backend lacks are skipped")
    parser.add_argument("--batch-sizes", type=_ints, default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per row")
    default_data = SHARED_DATA / "sst2" / "dev.tsv"
    parser.add_argument("--data", type=Path, default=default_data if default_data.is_file() else None,
                        help="sentences (TSV or one a line); default: generated sentences")
    parser.set_defaults(run=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    from model.evaluation import benchmark

    print(benchmark(args.model_dir, args.backends, args.precisions, args.batch_sizes, args.seconds, args.data))
    return 0


# --- random-checkpoint and settings ------------------------------------------------------------


def _add_random_checkpoint(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shape", default="tiny", choices=["tiny", "distilbert-base"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--labels", type=_csv, default=["NEGATIVE", "POSITIVE"], help="comma-separated label names")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=_run_random_checkpoint)


def _run_random_checkpoint(args: argparse.Namespace) -> int:
    from model.checkpoints import build_random_checkpoint

    path = build_random_checkpoint(args.out, labels=tuple(args.labels), shape=args.shape, seed=args.seed)
    print(f"random {args.shape} checkpoint with labels {','.join(args.labels)} written to {path}")
    return 0


def _run_settings(args: argparse.Namespace) -> int:
    from model.settings import settings_table

    print(settings_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
