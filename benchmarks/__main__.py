"""Run every benchmarks/bench_*.py, one after the other: `.venv/bin/python -m benchmarks`.

Each benchmark prints its own medians and ratios against its baseline, with its default settings
(run one file directly to pass it options). Exit status is non-zero if any benchmark failed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    failed = 0
    for bench in sorted(HERE.glob("bench_*.py")):
        print(f"== {bench.name}", flush=True)
        failed |= subprocess.run([sys.executable, str(bench)]).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
