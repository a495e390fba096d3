"""What the CPU offers ONNX Runtime's int8 kernels: the instruction set they will use.

ONNX Runtime (MLAS) picks its integer matrix-multiply kernel from the CPU's features, best
first: AMX, AVX-512 VNNI, AVX-VNNI, AVX-512, AVX2. Without VNNI the u8 x s8 kernels add two
255 x 127 products into int16 (VPMADDUBSW) and can saturate; with 7-bit weights
(reduce_range) they cannot, so the int8 artifacts built here give the same answers on every
one of these. The name is logged at start-up, exported in `sentiment_build_info` and printed
with every figure of `python -m model evaluate` and `bench`.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

# Flags that decide the kernel, as /proc/cpuinfo spells them; kept in the manifest with the gate.
INT8_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def int8_isa(flags: frozenset[str] | None = None) -> str:
    """The instruction set of ONNX Runtime's int8 kernels here: AMX, AVX-512 VNNI, AVX-VNNI, AVX-512, AVX2."""
    flags = cpu_flags() if flags is None else flags
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64", "i686", "i386"):
        return machine or "unknown"
    if {"amx_tile", "amx_int8"} <= flags:
        return "AMX"
    if {"avx512_vnni", "avx512bw"} <= flags:
        return "AVX-512 VNNI"
    if "avx_vnni" in flags:
        return "AVX-VNNI"
    if {"avx512f", "avx512bw", "avx512vl"} <= flags:
        return "AVX-512"
    if "avx2" in flags:
        return "AVX2"
    return "SSE"


def cpu_facts() -> dict:
    """ISA, the int8-relevant flags present, the CPU model: what the manifest records beside the gate."""
    return {"isa": int8_isa(), "flags": sorted(cpu_flags() & set(INT8_FLAGS)), "model": cpu_model()}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
