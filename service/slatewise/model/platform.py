"""What the machine can do, decided once: the engine's dtype and its cores.

On a CPU without native bf16 (AVX2-only x86, older AVX-512 without
avx512_bf16), vLLM's ``dtype=auto`` keeps a bf16 checkpoint in bf16 and oneDNN
runs every linear layer through slow fallbacks ("Failed to create oneDNN
linear"): measured on such a machine, 165 s to SERVING and a 20 s cached slate
in bf16 against 74 s and 1.7 s in float32. We therefore ask the same question
vLLM and oneDNN ask (AVX512-BF16 or AMX tiles on x86, the BF16 feature on Arm)
and pick float32 where the answer is no. An explicit ``--dtype`` always wins.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# /proc/cpuinfo flags that give native bf16 matrix arithmetic.
X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
ARM_BF16_FLAGS = ("bf16",)


@dataclass(frozen=True)
class DtypeChoice:
    dtype: str  # what vLLM is given
    reason: str  # for the log and the README's table


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The first CPU's feature flags (x86 'flags', Arm 'Features')."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_has_native_bf16(flags: set[str] | None = None) -> bool:
    if flags is None:
        try:
            import torch

            # The checks vLLM's CPU backend itself makes (platforms/cpu.py).
            if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
                return True
        except (ImportError, AttributeError):
            pass
        flags = cpu_flags()
    wanted = ARM_BF16_FLAGS if platform.machine().lower() in ("aarch64", "arm64") else X86_BF16_FLAGS
    return any(f in flags for f in wanted)


def choose_dtype(requested: str, *, on_gpu: bool, native_bf16: bool | None = None,
                 trained: bool = False) -> DtypeChoice:
    """The dtype for the engine: the operator's, or the fastest exact one here."""
    if requested != "auto":
        return DtypeChoice(requested, "set by --dtype")
    if trained:
        # vLLM's auto would halve a float32 checkpoint; a model of a few MB
        # gains no speed from that and its item scores lose precision.
        return DtypeChoice("float32", "a model trained by slatewise train: float32, as trained")
    if on_gpu:
        return DtypeChoice("auto", "GPU: the model's own dtype")
    if native_bf16 is None:
        native_bf16 = cpu_has_native_bf16()
    if native_bf16:
        return DtypeChoice("auto", "CPU with native bf16 (avx512_bf16/amx_bf16 or Arm bf16): the model's own dtype")
    return DtypeChoice("float32", "CPU without native bf16: bf16 would run through slow fallbacks")


def descendant_pids(pid: int | None = None) -> list[int]:
    """Every process below `pid` (default: us), from /proc; [] where there is none."""
    out: list[int] = []
    todo = [pid or os.getpid()]
    while todo:
        parent = todo.pop()
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                found = [int(c) for c in children.read_text().split()]
            except (OSError, ValueError):
                continue
            out += found
            todo += found
    return out


def lower_priority(pids: list[int], nice: int) -> int:
    """Make the engine's processes yield the CPU to the thread that answers
    callers. Raising niceness needs no privilege; returns how many changed."""
    changed = 0
    for pid in pids:
        try:
            if os.getpriority(os.PRIO_PROCESS, pid) < nice:
                os.setpriority(os.PRIO_PROCESS, pid, nice)
                changed += 1
        except OSError:
            continue  # gone meanwhile
    return changed


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """Cores our cgroup may use per period (a Kubernetes CPU limit), or None."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # cgroup v2
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 else None
    except (OSError, ValueError):
        return None


def engine_cpu_bind(allowed: list[int] | None = None, quota: float | None = None) -> str | None:
    """VLLM_CPU_OMP_THREADS_BIND for a CPU quota smaller than the cores we may
    run on, else None (vLLM's own choice: every allowed core but one).

    vLLM sizes its OpenMP team by the cores it may be scheduled on, not by the
    quota: a pod limited to 4 cores on a 64-core node would run 63 spinning
    threads, use up the period's quota in a few milliseconds and leave the
    whole pod, the thread that answers callers included, throttled for the
    rest of it. We give the engine the whole cores of the quota but one, which
    stays for the server.
    """
    allowed = sorted(allowed if allowed is not None else os.sched_getaffinity(0))
    quota = cgroup_cpu_quota() if quota is None else quota
    if quota is None or quota >= len(allowed):
        return None
    cores = allowed[: max(1, int(quota) - 1)]
    return ",".join(str(c) for c in cores)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _threads(pid: int) -> list[int]:
    try:
        return [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return []


def pin_engine_core(pids: list[int]) -> set[int] | None:
    """Move vLLM's engine-core process onto the cores its CPU worker is bound
    to; returns those cores, or None when there was nothing to do.

    On CPU, vLLM runs the engine core (scheduler) and the worker (model,
    sampler, our logits processor) as two processes that hand every step
    to each other through shared memory and wait for the answer in a spin
    loop (``sched_yield``, for a second after each message). The worker is
    bound to its OpenMP cores; the engine core is not, so its spinning runs
    on the core vLLM left for the server and takes it from the gRPC thread,
    the query encoder and the pointwise hedge. Pinned beside the worker, the
    two spinners yield to each other on one core and the server keeps its
    own. Measured on 2 cores, the same server switched between the two
    (docs/BENCHMARKS.md): 31-57 % more slates at concurrency 16 pinned, and
    4-35 % fewer at concurrency 1, where the spinners now share a core.
    """
    workers = [p for p in pids if _comm(p).startswith("VLLM::Worker")]
    cores: set[int] = set()
    for worker in workers:
        try:
            cores |= os.sched_getaffinity(worker)
        except OSError:
            continue
    if not cores or cores == os.sched_getaffinity(0):
        return None  # the worker runs anywhere (no binding): nothing to keep apart
    return cores if _engine_core_affinity(pids, cores) else None


def unpin_engine_core(pids: list[int]) -> int:
    """Give vLLM's engine-core process back every core the server may use;
    returns how many of its threads moved. While another engine starts
    beside a serving one (a hot swap), the serving engine's core and worker,
    spinning and working on one core, starved the new worker: measured with
    4 callers, its start-up took 22-79 s pinned and once over 5 minutes,
    16-25 s unpinned."""
    return _engine_core_affinity(pids, os.sched_getaffinity(0))


def _engine_core_affinity(pids: list[int], cores: set[int]) -> int:
    moved = 0
    for pid in pids:
        if not _comm(pid).startswith("VLLM::EngineCor"):  # the kernel keeps 15 characters of a name
            continue
        for tid in _threads(pid):  # every thread: affinity is per thread
            try:
                os.sched_setaffinity(tid, cores)
                moved += 1
            except OSError:
                continue
    return moved
