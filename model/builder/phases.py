"""One console line per build phase, with its time."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("model.builder")


@contextmanager
def phase(name: str) -> Iterator[dict]:
    """`with phase("export fp32") as line: ...; line["detail"] = "..."` logs "export fp32: ... (2.1 s)"."""
    line: dict = {"detail": ""}
    started = time.perf_counter()
    yield line
    detail = f": {line['detail']}" if line["detail"] else ""
    log.info("%s%s (%.1f s)", name, detail, time.perf_counter() - started)
