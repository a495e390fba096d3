"""Random-weight checkpoints for tests (the builder lives in model/build/checkpoints.py)."""

from model.build.checkpoints import build_random_checkpoint, build_tiny_checkpoint

__all__ = ["build_random_checkpoint", "build_tiny_checkpoint"]
