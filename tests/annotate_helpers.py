"""Small manifests with photos of known sizes for the annotation tests."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

SRC = Path(__file__).resolve().parent.parent / "src"


def make_manifest(folder: Path, n_subjects: int = 4, photos_per_subject: int = 2,
                  size: tuple[int, int] = (160, 120), seed: int = 0) -> Path:
    """A manifest of noisy photos (labels alternate), one row per photo."""
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for s in range(n_subjects):
        for k in range(photos_per_subject):
            name = f"img/w{s:02d}_{k}.png"
            arr = rng.integers(30 + 5 * s, 120 + 5 * s, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(folder / name)
            rows.append({"subject_id": f"W{s:02d}", "image": name, "ch": s % 2,
                         "nsp": (s // 2) % 2})
    path = folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(manifest: Path, port: int, *args: str) -> subprocess.Popen:
    """`posturescreen annotate` in its own process, as a rater would run it."""
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "HOME": str(manifest.parent)}
    return subprocess.Popen(
        [sys.executable, "-m", "posturescreen", "annotate", str(manifest), "--port",
         str(port), "--no-suggest", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for_token(port: int, proc: subprocess.Popen, timeout: float = 90) -> str:
    """The session token from the served page, once the server answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode() if proc.stdout else "exited")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                page = r.read().decode()
            return re.search(r"const TOKEN = '([^']+)'", page).group(1)
        except OSError:
            time.sleep(0.2)
    raise AssertionError("the annotation server did not start")


def put_point(port: int, token: str, photo: int, name: str, body: str) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/photos/{photo}/points/{name}", data=body.encode(),
        method="PUT", headers={"Content-Type": "application/json",
                               "X-Annotate-Token": token})
    with urllib.request.urlopen(req, timeout=20) as r:
        return r.status


def fake_suggester(image, full_size):
    """A stand-in for a learned landmark model: fixed places, confidence from brightness."""
    w, h = full_size
    sure = float(np.asarray(image).mean()) / 255
    return {"ear": (0.625 * w, 0.2 * h, sure), "hip": (0.4 * w, 0.85 * h, 0.9),
            "knee": (2.0 * w, 0.5 * h, 1.0)}  # outside the photo: no suggestion


fake_suggester.names = ("ear", "hip", "knee")
fake_suggester.label = "test-suggester 1"
