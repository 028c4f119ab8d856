"""Demo study wall time and peak memory, against the targets (5 min, 4 GB on 2 CPUs).

    python benchmarks/study.py [--out /tmp/bench-demo] [--keep-cache]

Runs `posturescreen demo` in a child process with a fresh run folder (and, unless
--keep-cache, a fresh synthetic-cohort cache, so generation is included) and reports its
wall time and peak resident memory (getrusage of the child).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 300.0
TARGET_GB = 4.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--keep-cache", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "demo"
        shutil.rmtree(out, ignore_errors=True)
        env = dict(os.environ)
        if not args.keep_cache:
            env["POSTURESCREEN_CACHE"] = str(Path(tmp) / "cache")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "posturescreen", "demo", "--out", str(out)],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KB -> GB
    print(f"demo study: wall {wall:.0f} s (target {TARGET_S:.0f} s, ratio target/measured "
          f"{TARGET_S / wall:.2f}); peak RSS {peak_gb:.2f} GB (target {TARGET_GB:.0f} GB, "
          f"ratio {TARGET_GB / peak_gb:.2f})")


if __name__ == "__main__":
    main()
