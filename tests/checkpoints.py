"""Random-weight checkpoints for tests (the builder lives in model/checkpoints.py)."""

from model.checkpoints import build_random_checkpoint, build_tiny_checkpoint

__all__ = ["build_random_checkpoint", "build_tiny_checkpoint"]
