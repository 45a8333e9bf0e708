"""The engine's dtype follows the CPU: float32 without native bf16."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from slatewise.model.platform import choose_dtype, cpu_flags, cpu_has_native_bf16

AVX2_ONLY = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 fma\n"
AVX512_BF16 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n"


def test_flags_are_read_from_cpuinfo():
    assert cpu_flags(AVX2_ONLY) == {"fpu", "sse2", "avx", "avx2", "fma"}
    assert "bf16" in cpu_flags(ARM_BF16)
    assert cpu_flags("") == set()


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 flag names")
def test_x86_bf16_needs_avx512_bf16_or_amx():
    assert not cpu_has_native_bf16(cpu_flags(AVX2_ONLY))
    assert cpu_has_native_bf16(cpu_flags(AVX512_BF16))
    assert cpu_has_native_bf16({"avx2", "amx_bf16", "amx_tile"})


def test_choice():
    assert choose_dtype("auto", on_gpu=False, native_bf16=False).dtype == "float32"
    assert choose_dtype("auto", on_gpu=False, native_bf16=True).dtype == "auto"
    assert choose_dtype("auto", on_gpu=True, native_bf16=False).dtype == "auto"
    assert choose_dtype("auto", on_gpu=False, native_bf16=True, trained=True).dtype == "float32"
    explicit = choose_dtype("bfloat16", on_gpu=False, native_bf16=False)
    assert explicit.dtype == "bfloat16" and "--dtype" in explicit.reason


def test_this_machine_agrees_with_its_flags():
    flags = cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo")
    wanted = {"bf16"} if platform.machine() in ("aarch64", "arm64") else {"avx512_bf16", "amx_bf16"}
    assert cpu_has_native_bf16() == bool(flags & wanted)


def test_cgroup_quota_is_read_from_v2_and_v1(tmp_path):
    from slatewise.model.platform import cgroup_cpu_quota

    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 2.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("400000")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert cgroup_cpu_quota(v1) == 4.0
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    assert cgroup_cpu_quota(v1) is None


def test_engine_threads_follow_a_small_quota():
    from slatewise.model.platform import engine_cpu_bind

    many = list(range(64))
    assert engine_cpu_bind(many, None) is None  # no quota: vLLM's choice
    assert engine_cpu_bind(many, 64.0) is None
    assert engine_cpu_bind(many, 4.0) == "0,1,2"  # the quota's cores, one kept for the server
    assert engine_cpu_bind(many, 1.5) == "0"
    assert engine_cpu_bind([8, 3, 5], 2.0) == "3"


def test_engine_processes_can_be_reniced():
    import os
    import subprocess
    import sys

    from slatewise.model.platform import descendant_pids, lower_priority

    ours = os.getpriority(os.PRIO_PROCESS, 0)
    if ours >= 19:
        pytest.skip("already at the lowest priority")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in descendant_pids()
        assert lower_priority([child.pid], ours + 1) == 1
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == ours + 1
        assert lower_priority([child.pid], ours) == 0  # never raises priority
    finally:
        child.kill()
        child.wait()


def _named_child(name: str, cores: set[int] | None = None):
    """A process that calls itself ``name`` (as vLLM's processes do) and,
    given ``cores``, binds itself to them; it says 'ready' once both are done."""
    import subprocess
    import sys

    code = (f"import os, sys, threading, time; open('/proc/self/comm', 'w').write({name!r}); "
            + (f"os.sched_setaffinity(0, {sorted(cores)!r}); " if cores else "")
            + "threading.Thread(target=time.sleep, args=(30,), daemon=True).start(); "
            "print('ready', flush=True); time.sleep(30)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    return child


@pytest.fixture
def bound_worker():
    """A named worker bound to the first allowed core, an engine core and a
    bystander, as real processes with a second thread each."""
    import os

    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("needs two cores")
    children = (_named_child("VLLM::Worker", {allowed[0]}), _named_child("VLLM::EngineCore"),
                _named_child("python"))
    yield (set(allowed), *children)
    for child in children:
        child.kill()
        child.wait()


def test_engine_core_is_pinned_to_its_workers_cores(bound_worker):
    import os

    from slatewise.model.platform import pin_engine_core

    allowed, worker, core, other = bound_worker
    first = {min(allowed)}
    assert pin_engine_core([worker.pid, core.pid, other.pid]) == first
    for tid in os.listdir(f"/proc/{core.pid}/task"):  # every thread, not only the main one
        assert os.sched_getaffinity(int(tid)) == first
    assert os.sched_getaffinity(other.pid) == allowed  # nothing else is touched
    # A worker bound to nothing in particular leaves the engine core alone.
    assert pin_engine_core([other.pid, core.pid]) is None


def test_an_unpinned_engine_core_gets_every_core_back_and_only_it(bound_worker):
    import os

    from slatewise.model.platform import pin_engine_core, unpin_engine_core

    allowed, worker, core, _ = bound_worker
    first = {min(allowed)}
    assert pin_engine_core([worker.pid, core.pid]) == first
    threads = os.listdir(f"/proc/{core.pid}/task")
    assert unpin_engine_core([worker.pid, core.pid]) == len(threads)
    for tid in threads:
        assert os.sched_getaffinity(int(tid)) == allowed
    assert os.sched_getaffinity(worker.pid) == first  # the worker keeps vLLM's binding
    assert pin_engine_core([worker.pid, core.pid]) == first  # and it can be pinned again


def test_an_unbound_worker_leaves_the_engine_core_alone():
    import os

    from slatewise.model.platform import pin_engine_core

    worker = _named_child("VLLM::Worker")
    core = _named_child("VLLM::EngineCore")
    try:
        assert pin_engine_core([worker.pid, core.pid]) is None
        assert os.sched_getaffinity(core.pid) == os.sched_getaffinity(0)
    finally:
        for child in (worker, core):
            child.kill()
            child.wait()


def test_the_server_keeps_one_torch_and_one_blas_thread():
    """Without the limits, torch's OpenMP team and OpenBLAS's spin a thread per
    core after each small op, on the core vLLM's engine needs. A child process,
    so this one keeps its threads; numpy is imported first, as in the server."""
    script = (
        "import json, numpy, torch\n"
        "from threadpoolctl import threadpool_info\n"
        "from slatewise.server import limit_server_threads\n"
        "limit_server_threads()\n"
        "blas = [p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas']\n"
        "print(json.dumps([torch.get_num_threads(), blas]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    torch_threads, blas = json.loads(out.stdout.splitlines()[-1])
    assert torch_threads == 1
    assert blas, "numpy was built without a BLAS threadpoolctl can see"
    assert set(blas) == {1}
