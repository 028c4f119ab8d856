"""The photo cache at scale: memory, decode scaling, epoch time and cache hits for N photos.

    posturescreen synth --out COHORT --subjects 5000 --distinct 5000 --photos 100000
    python benchmarks/photo_cache.py --manifest COHORT/manifest.csv --photos 1000 \\
        --cache /big/disk/cache [--sizes 224,456] [--compression none|zstd] [--scaling]
        [--epoch-steps 8]

Takes the manifest's first N photos. Each phase runs in a process of its own, so its peak
RSS is its own; beside it, the peak of the phase and its decoding workers together (RSS
summed over the process tree, sampled every 0.2 s: the figure the 4 GB target is about).
Phases, each printed with a ratio against a reference measured in the same run:

- scaling (--scaling): decode and letterbox the first 1,000 photos into an empty cache with
  1 worker, then with 2 (ratio 2 workers / 1 worker; target >= 1.7); with --pose the pose
  estimator runs in the workers too, as in a study with the person crop. Also the CPU
  seconds of each (sampled from /proc): on a machine others are using, wall time cannot
  show scaling, the CPU time still shows the overhead of the second worker.
- first study: every photo decoded into the cache by all cores (photos/s, peak RSS).
- second study: the same photos again: every entry found, nothing decoded (ratio first /
  second).
- epoch, per size: one epoch of timm's `test_resnet` (pretrained none: the point is the data
  path, not the model) over all N photos read from the cache in batches of 32 with
  read-ahead, the study's augmentation and train step. Reference: the same epoch on the
  first 1,000 photos held in memory (a numpy array), scaled linearly to N; ratio = epoch
  time / reference (1.0: linear in N and no cost for reading from disk). With
  --epoch-steps K both time only the first K batches (the cache's drawn from all N photos)
  and the epoch is that time scaled to N photos.
Peak RSS targets: < 4 GB at every N (ratio = RSS / 4 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from posturescreen.config.study import AugmentConfig
from posturescreen.data.decode import decode_photos
from posturescreen.data.photo_arrays import read_ahead
from posturescreen.data.photo_store import PhotoStore
from posturescreen.models.cnn import build_model, preprocessing_for
from posturescreen.models.training import (
    Normalizer,
    build_augmentation,
    build_optimizer,
    train_step,
    training_batch,
)
from posturescreen.posture.estimator import POSE_DRAFT, PoseHook

INTERPOLATION = {224: "bilinear", 456: "bicubic"}  # resnet50's and efficientnet_b5's
REFERENCE_PHOTOS = 1000
TARGET_RSS_MB = 4096


_TICK = os.sysconf("SC_CLK_TCK")
CPU_SECONDS: dict[int, float] = {}  # CPU time last seen of each process of the tree


def _tree_rss_mb() -> float:
    """RSS of this process and all its descendants (the decoding workers), MB, from /proc
    (Linux). Pages shared between forked workers are counted in each: an upper bound.
    Records each one's CPU time on the way (CPU_SECONDS)."""
    parent, cpu = {}, {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                parent[int(name)] = int(fields[1])
                cpu[int(name)] = (int(fields[11]) + int(fields[12])) / _TICK
            except (OSError, IndexError, ValueError):
                pass  # ended meanwhile
    tree, grew = {os.getpid()}, True
    while grew:
        more = {p for p, pp in parent.items() if pp in tree} - tree
        tree |= more
        grew = bool(more)
    CPU_SECONDS.update({pid: cpu[pid] for pid in tree if pid in cpu})
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next((int(line.split()[1]) for line in f
                               if line.startswith("VmRSS:")), 0)
        except OSError:
            pass
    return total / 1024


class TreePeak(threading.Thread):
    """Samples _tree_rss_mb every 0.2 s: the peak memory of a phase, workers included."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.done = 0.0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            self.peak = max(self.peak, _tree_rss_mb())


PEAK = TreePeak()


def _rss_mb() -> tuple[float, float]:
    """Peak RSS of this process (getrusage), and the sampled peak of this process and its
    decoding workers together, MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return own, max(own, PEAK.peak, _tree_rss_mb())


def _paths(manifest: Path, n: int) -> list[Path]:
    table = pd.read_csv(manifest, usecols=["image"], nrows=n)
    if len(table) < n:
        raise SystemExit(f"{manifest} has only {len(table)} photos")
    return [manifest.parent / p for p in table["image"]]


def phase_decode(args) -> dict:
    sizes = {s: INTERPOLATION.get(s, "bicubic") for s in args.sizes}
    hook = PoseHook(crop=True, margin=0.1) if args.pose else None
    draft = max([*sizes, POSE_DRAFT]) if hook else None
    store = PhotoStore.open(args.cache, args.compression)
    t0 = time.perf_counter()
    cache = decode_photos(_paths(args.manifest, args.photos), sizes, store=store, hook=hook,
                          draft_size=draft, workers=args.workers)
    seconds = time.perf_counter() - t0
    own, workers = _rss_mb()
    return {"seconds": seconds, "found": cache.stats.found, "decoded": cache.stats.decoded,
            "workers": cache.stats.workers, "rss_mb": own, "worker_rss_mb": workers,
            "cpu_seconds": sum(CPU_SECONDS.values())}


def _epoch(images, size: int, n: int, steps: int | None) -> tuple[float, int]:
    """Seconds for the epoch's first `steps` batches (all by default) of a shuffled order over
    all `n` photos, and the photos they held."""
    torch.manual_seed(0)
    model, _ = build_model("test_resnet", "none")
    prep = preprocessing_for("test_resnet", size)
    device = torch.device("cpu")
    model.to(memory_format=torch.channels_last).train()
    augment = build_augmentation(AugmentConfig(), size)
    norm, loss_fn = Normalizer(prep, device), nn.BCEWithLogitsLoss()
    optimizer = build_optimizer(model, 3e-4, 0.05)
    order = np.random.default_rng(0).permutation(n)
    batches = [order[k:k + 32] for k in range(0, n - 1, 32)][:steps]
    labels = (np.arange(n) % 2).astype(np.float32)
    t0 = time.perf_counter()
    for idx, u8 in zip(batches, read_ahead(images, batches), strict=True):
        x = training_batch(u8, augment, norm, device=device, channels_last=True)
        y = torch.from_numpy(labels[idx])
        train_step(model, x, y, loss_fn=loss_fn, optimizer=optimizer, device=device,
                   precision="fp32")
    return time.perf_counter() - t0, sum(len(b) for b in batches)


def phase_epoch(args) -> dict:
    size = args.sizes[0]
    sizes = {size: INTERPOLATION.get(size, "bicubic")}
    paths = _paths(args.manifest, args.photos)
    # decoded at the first study's draft size, so its entries are the ones found
    draft = args.draft or max(sizes)
    if args.in_memory:  # the reference: the photos as a numpy array, decoded here
        images = decode_photos(paths, sizes, draft_size=draft,
                               workers=args.workers).arrays[size]
    else:  # every entry is in the cache already: this only indexes it
        cache = decode_photos(paths, sizes, store=PhotoStore.open(args.cache, args.compression),
                              draft_size=draft, workers=args.workers)
        if cache.stats.decoded:
            raise SystemExit(f"{cache.stats.decoded} photos were not in the cache")
        images = cache.arrays[size]
    seconds, trained = _epoch(images, size, len(paths), args.epoch_steps)
    own, workers = _rss_mb()
    return {"seconds": seconds, "trained": trained, "rss_mb": own, "worker_rss_mb": workers}


def _run(phase: str, args, **changes) -> dict:
    argv = [sys.executable, __file__, "--phase", phase, "--manifest", str(args.manifest),
            "--cache", str(changes.get("cache", args.cache)),
            "--photos", str(changes.get("photos", args.photos)),
            "--sizes", ",".join(map(str, changes.get("sizes", args.sizes))),
            "--compression", args.compression,
            "--workers", str(changes.get("workers", args.workers or 0))]
    argv += ["--epoch-steps", str(args.epoch_steps)] if args.epoch_steps else []
    argv += ["--threads", str(args.threads), "--draft", str(max(args.sizes))]
    argv += ["--pose"] if changes.get("pose") else []
    argv += ["--in-memory"] if changes.get("in_memory") else []
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _line(name: str, result: dict, extra: str) -> None:
    print(f"{name:34s} {result['seconds']:8.1f} s  peak RSS {result['rss_mb']:6.0f} MB, "
          f"with workers {result['worker_rss_mb']:6.0f} MB (ratio to 4 GB "
          f"{result['worker_rss_mb'] / TARGET_RSS_MB:.2f})  {extra}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--cache", type=Path, required=True, help="an empty folder (deleted)")
    ap.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")],
                    default=[224, 456])
    ap.add_argument("--compression", choices=["none", "zstd"], default="none")
    ap.add_argument("--workers", type=int, default=0, help="0: every core")
    ap.add_argument("--epoch-steps", type=int, default=None,
                    help="time only this many batches of each epoch (of a shuffled order over "
                    "all N photos) and scale to the whole epoch; default: the whole epoch")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads in the epochs (0: torch's default, every core); 1 "
                    "keeps the timing steady on a machine others are using")
    ap.add_argument("--scaling", action="store_true", help="also 1 vs 2 decoding workers")
    ap.add_argument("--pose", action="store_true", help="scaling with the pose estimator")
    ap.add_argument("--phase", choices=["decode", "epoch"], help=argparse.SUPPRESS)
    ap.add_argument("--in-memory", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--draft", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.workers = args.workers or None
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.phase:
        run = phase_decode if args.phase == "decode" else phase_epoch
        PEAK.start()
        print(json.dumps(run(args)))
        return
    n = args.photos
    print(f"{n} photos of {args.manifest}, sizes {args.sizes}, cache {args.cache} "
          f"({args.compression}); torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.scaling:
        m = min(n, REFERENCE_PHOTOS)
        timed = {}
        for w in (1, 2):
            scratch = args.cache.with_name(f"{args.cache.name}-scaling{w}")
            shutil.rmtree(scratch, ignore_errors=True)
            timed[w] = _run("decode", args, cache=scratch, photos=m, workers=w,
                            pose=args.pose)
            shutil.rmtree(scratch, ignore_errors=True)
            _line(f"decode {m}{' + poses' if args.pose else ''}, {w} worker(s)", timed[w],
                  f"{m / timed[w]['seconds']:.1f} photos/s")
        print(f"decode scaling, 2 workers / 1 worker: "
              f"{timed[1]['seconds'] / timed[2]['seconds']:.2f} (target >= 1.7)")
        # what 2 free cores would give: the work per photo, whoever else uses the machine
        cpu = {w: timed[w]["cpu_seconds"] for w in (1, 2)}
        print(f"CPU seconds (process tree, start-up included): 1 worker {cpu[1]:.1f}, "
              f"2 workers {cpu[2]:.1f}; parallel efficiency 1 / 2 workers "
              f"{cpu[1] / cpu[2]:.2f} (1.0: no overhead; wall scaling on 2 idle cores is at "
              f"most 2 x this)")
    shutil.rmtree(args.cache, ignore_errors=True)
    first = _run("decode", args)
    _line("first study: decode into the cache", first, f"{n / first['seconds']:.1f} photos/s, "
          f"{first['decoded']} decoded, {first['workers']} worker(s)")
    second = _run("decode", args)
    _line("second study: the same photos", second,
          f"{second['found']} of {n} found, {second['decoded']} decoded; ratio first/second "
          f"{first['seconds'] / second['seconds']:.1f}")
    for size in args.sizes:
        m = min(n, REFERENCE_PHOTOS)
        ref = _run("epoch", args, sizes=[size], photos=m, in_memory=True)
        per_photo = ref["seconds"] / ref["trained"]
        _line(f"epoch @{size}, {m} photos in memory", ref,
              f"(reference: {ref['trained']} photos trained, {1e3 * per_photo:.0f} ms each)")
        epoch = _run("epoch", args, sizes=[size])
        whole = epoch["seconds"] * n / epoch["trained"]  # the whole epoch, if timed in part
        _line(f"epoch @{size}, {n} photos from cache", epoch,
              f"{epoch['trained']} photos trained; epoch {whole:.0f} s; ratio to the "
              f"reference scaled to N {whole / (per_photo * n):.2f}")
    used = sum(f.stat().st_size for f in args.cache.rglob("*") if f.is_file())
    print(f"cache on disk: {used / 1e9:.2f} GB ({used / n / 1e3:.0f} kB per photo)")


if __name__ == "__main__":
    main()
