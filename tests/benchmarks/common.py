"""Helpers shared by the benchmark scripts (not collected by pytest)."""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

# vLLM logs to stdout by default; the tables are the benchmarks' stdout.
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from conftest import start_server, stop_server  # noqa: E402,F401  (reused: real servers on loopback)


def machine(trained: bool = False) -> str:
    """The CPU a figure was taken on, for the table header: model, cores, the
    bf16/AVX-512 flags that decide the engine's dtype, and that dtype (for a
    model trained by `slatewise train` when ``trained``)."""
    from slatewise.model.platform import choose_dtype, cpu_flags, cpu_has_native_bf16

    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = cpu_flags()
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    dtype = choose_dtype("auto", on_gpu=False, native_bf16=cpu_has_native_bf16(), trained=trained)
    return (f"{model}, {os.cpu_count()} cores, flags: {' '.join(shown) or 'none of avx2/avx512'}; "
            f"engine dtype: {dtype.dtype} ({dtype.reason})")


def pct(values, q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    idx = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[idx]


def median(values) -> float:
    return statistics.median(values) if values else float("nan")


def table(headers: list[str], rows: list[list]) -> str:
    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
