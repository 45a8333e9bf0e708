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


def ratio_ci(a, b, stat=None, resamples: int = 2000, seed: int = 0) -> str:
    """A 95 % bootstrap interval of median(a) / median(b) (or ``stat``(a, b))
    over paired samples: a[i] and b[i] are the same request on the two
    systems, resampled together.

    Why: on these machines one request's engine time alone ranges about 2.5x
    (nine decode steps took 20-52 ms within one run), so the median of 75
    requests moves by several per cent from run to run; the interval says
    how far a single run's ratio can be trusted."""
    import numpy as np

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) != len(b) or len(a) < 2:
        return "n/a"
    stat = stat or (lambda x, y: np.median(x) / np.median(y))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(resamples, len(a)))
    values = np.sort([stat(a[i], b[i]) for i in idx])
    return f"{values[int(0.025 * resamples)]:.3f} - {values[int(0.975 * resamples) - 1]:.3f}"


def table(headers: list[str], rows: list[list]) -> str:
    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
