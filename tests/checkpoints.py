"""Random-weight checkpoints for tests (the builder lives in model/builder/checkpoints.py)."""

from model.builder.checkpoints import build_random_checkpoint, build_tiny_checkpoint

__all__ = ["build_random_checkpoint", "build_tiny_checkpoint"]
