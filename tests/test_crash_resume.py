"""Kill a study with SIGKILL in the middle of a job, rerun it, and get the numbers of an
uninterrupted run to the last digit."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY_OVERRIDES
from posturescreen.config.study import load_config
from posturescreen.pipeline import run_study

# slower jobs (about a second or two each) so the kill lands inside one
SLOW = [*TINY_OVERRIDES, "train.epochs=25", "train.patience=25",
        "tasks=[{name: CH, positive: 'ch == 1'}, {name: NSP, positive: 'nsp == 1'}]"]


def _done(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("*/*/fold*/predictions.csv"))


@pytest.mark.slow
def test_sigkill_mid_job_then_resume_equals_uninterrupted(tiny_manifest, tmp_path):
    overrides = [*SLOW, f"data.manifest={tiny_manifest}"]
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "posturescreen", "study", "--out", str(killed)]
    for o in overrides:
        cmd += ["--set", o]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 240
        while len(_done(killed)) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, "study ended before it could be killed"
            time.sleep(0.05)
        time.sleep(0.5)  # inside the third job
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = _done(killed)
    assert 2 <= len(finished) < 6, "the kill must land mid-study"
    for path in finished:  # whatever exists is complete
        assert len(pd.read_csv(path)) > 0
    stamps = {p: p.stat().st_mtime_ns for p in finished}

    cfg = load_config(None, overrides)
    resumed = run_study(cfg, killed)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # done jobs not redone
    clean = run_study(cfg, tmp_path / "clean")
    pd.testing.assert_frame_equal(resumed, clean)
    assert (killed / "metrics.csv").read_bytes() == (tmp_path / "clean" / "metrics.csv"
                                                     ).read_bytes()
