"""A bounded load test of `posturescreen serve` on loopback: sequential and concurrent
predictions, failed requests, latency and the server's memory before and after.

    python benchmarks/web_load.py \\
        --photo ../shared/data/posturecoach/images/pc_20241007_191052.jpg \\
        [--sequential 200] [--concurrent 20] [--model resnet50]

The server runs as its own process (`python -m posturescreen serve`) bound to 127.0.0.1;
its resident memory is read from /proc after a warm-up and at the end. Reference: the
memory after warm-up, measured in the same run (growth = end - warm-up).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from _bundle import make_bundle


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photo", type=Path, required=True)
    ap.add_argument("--sequential", type=int, default=200)
    ap.add_argument("--concurrent", type=int, default=20)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    body = args.photo.read_bytes()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        bundle = make_bundle(Path(tmp), args.model, args.size)
        server = subprocess.Popen([sys.executable, "-m", "posturescreen", "serve", "--bundle",
                                   str(bundle), "--host", "127.0.0.1", "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if httpx.get(url + "/api/models", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.3)
            headers = {"content-type": "image/jpeg"}
            client = httpx.Client(timeout=120)

            def one(_: int) -> tuple[int, float]:
                t0 = time.perf_counter()
                r = client.post(url + "/api/predict", content=body, headers=headers)
                return r.status_code, time.perf_counter() - t0

            for i in range(10):  # warm-up
                one(i)
            warm = rss_mb(server.pid)
            seq = [one(i) for i in range(args.sequential)]
            after_seq = rss_mb(server.pid)
            with ThreadPoolExecutor(args.concurrent) as pool:
                t0 = time.perf_counter()
                conc = list(pool.map(one, range(args.concurrent)))
                conc_wall = time.perf_counter() - t0
            end = rss_mb(server.pid)
            alive = client.get(url + "/api/models").status_code == 200
        finally:
            server.terminate()
            server.wait(timeout=30)
    failed = sum(code != 200 for code, _ in seq + conc)
    lat = [t for _, t in seq]
    print(f"{args.model} @{args.size}, 4 fold models, Grad-CAM on every request")
    print(f"sequential: {len(seq)} requests, median {statistics.median(lat):.3f} s, "
          f"p95 {sorted(lat)[int(0.95 * len(lat)) - 1]:.3f} s")
    print(f"concurrent: {len(conc)} at once, all done in {conc_wall:.1f} s")
    print(f"failed requests: {failed}; server alive after: {alive}")
    print(f"server RSS: {warm:.0f} MB after warm-up (reference), {after_seq:.0f} MB after "
          f"sequential, {end:.0f} MB at the end; growth {end - warm:+.0f} MB "
          f"(ratio end/warm-up {end / warm:.3f})")


if __name__ == "__main__":
    main()
