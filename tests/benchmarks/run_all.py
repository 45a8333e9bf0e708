"""`make bench`: every benchmark in turn (one at a time: they share two cores).

Prints each script's tables; copy them into docs/BENCHMARKS.md and
docs/RELIABILITY.md with the date.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    ["bench_model_path.py", "--rounds", "40"],
    ["bench_decoding_settings.py", "--queries", "24", "-k", "5"],
    ["bench_decoding_cost.py", "--rounds", "30"],
    ["bench_throughput.py", "--catalogue-items", "100000"],
    ["bench_throughput.py", "--context", "pool50"],
    ["bench_pointwise.py"],
    ["bench_idle_cost.py"],
    ["reliability.py"],
]

if __name__ == "__main__":
    failed = 0
    for script, *args in SCRIPTS:
        print(f"\n## {script} {' '.join(args)}\n", flush=True)
        result = subprocess.run([sys.executable, str(HERE / script), *args], stderr=subprocess.DEVNULL)
        failed += result.returncode != 0
    sys.exit(1 if failed else 0)
