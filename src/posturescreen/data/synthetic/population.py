"""Who the synthetic workers are: sites, bodies, clothes, habitual posture, and the risk
model that turns posture into CH/NSP labels with exactly the requested cell counts."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from posturescreen.errors import PostureScreenError


class SynthesisError(PostureScreenError, ValueError):
    """Cohort settings that cannot be generated (sizes, counts, contrast, noise)."""

# The paper's cohort (design.md §1): workers per (CH, NSP) cell.
PAPER_CELLS = {(1, 1): 108, (1, 0): 27, (0, 1): 257, (0, 0): 139}
PAPER_PHOTOS = 904
PAPER_SUBJECTS = sum(PAPER_CELLS.values())  # 531


def paper_photo_count(n_subjects: int) -> int:
    """Photos for n workers at the paper's 904 photos per 531 workers."""
    return round(n_subjects * PAPER_PHOTOS / PAPER_SUBJECTS)


@dataclass(frozen=True)
class Site:
    name: str
    wall: tuple[int, int, int]
    floor: tuple[int, int, int]
    scale: float  # pixels per cm at 384 px, before per-photo jitter
    height: float  # camera height offset (fraction of the frame)
    noise: float  # sensor noise SD (0-255 scale)
    light: float  # mean brightness factor


SITES = (
    Site("A", (214, 209, 196), (150, 128, 104), 2.25, 0.00, 3.0, 1.00),
    Site("B", (180, 196, 210), (96, 96, 104), 2.05, 0.04, 6.0, 0.90),
    Site("C", (222, 214, 170), (120, 84, 60), 2.45, -0.03, 4.5, 1.08),
)

# Posture parameters: (mean, SD, clinical meaning). Angles in degrees, lengths in cm.
POSTURE = {
    "cva": (50.0, 7.0, "craniovertebral angle: C7-tragus line above horizontal; <48 forward head"),
    "head_flexion": (8.0, 8.0, "head pitched down relative to the neck line"),
    "kyphosis": (38.0, 10.0, "thoracic curve, degrees of bend along the thoracic spine"),
    "protraction": (3.0, 2.5, "shoulder forward of C7 (cm)"),
    "trunk_lean": (-4.0, 8.0, "trunk from vertical; negative leans back into the chair"),
    "pelvic_tilt": (5.0, 9.0, "posterior pelvic tilt (slump), degrees"),
    "hip_angle": (98.0, 10.0, "trunk-thigh angle"),
    "knee_angle": (100.0, 14.0, "thigh-shank angle; >90 puts the feet forward"),
}

# Risk model (standardised posture z-scores -> log-odds weight). CH: head and neck;
# NSP: mainly lower body and trunk.
CH_WEIGHTS = {"cva": -1.9, "head_flexion": 1.0, "protraction": 0.35}
NSP_WEIGHTS = {
    "pelvic_tilt": 1.0,
    "hip_angle": 0.7,
    "knee_angle": -0.5,
    "trunk_lean": -0.6,
    "crossed_legs": 0.6,
    "kyphosis": 0.3,
}
BOTH_INTERACTION = 0.8  # CH and NSP co-occur more than chance (108 vs ~93 expected)
DEFAULT_NOISE = 1.4  # Gumbel scale of the label noise: tuned for the oracle AUC bands


@dataclass
class Worker:
    subject_id: str
    site: str
    facing: str  # "right" or "left"
    height_scale: float
    trunk_len: float
    neck_len: float
    head_len: float
    upper_arm: float
    forearm: float
    thigh: float
    shank: float
    girth: float
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    shirt: tuple[int, int, int]
    trousers: tuple[int, int, int]
    crossed_legs: int
    age: int
    sex: str
    posture: dict[str, float]
    ch: int = 0
    nsp: int = 0


def _colour(
    rng: np.random.Generator, base: tuple[int, int, int], spread: int
) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-spread, spread + 1), 0, 255)) for c in base)


def _new_worker(i: int, rng: np.random.Generator) -> Worker:
    sex = "F" if rng.random() < 0.45 else "M"
    size = rng.normal(1.0 if sex == "M" else 0.93, 0.05)
    skins = [(241, 204, 170), (224, 172, 130), (190, 140, 100), (141, 93, 62), (96, 64, 44)]
    hairs = [(30, 24, 20), (70, 48, 30), (120, 90, 50), (160, 150, 140), (200, 170, 110)]
    shirts = [
        (40, 70, 130),
        (170, 40, 50),
        (60, 120, 80),
        (230, 230, 225),
        (90, 90, 95),
        (200, 150, 60),
        (120, 80, 140),
    ]
    trousers = [(35, 38, 50), (70, 70, 75), (50, 60, 90), (110, 95, 70)]
    posture = {k: float(rng.normal(m, s)) for k, (m, s, _) in POSTURE.items()}
    return Worker(
        subject_id=f"W{i:04d}",
        site="",
        facing="right" if rng.random() < 0.5 else "left",
        height_scale=size,
        trunk_len=52 * size * rng.normal(1, 0.04),
        neck_len=11 * size * rng.normal(1, 0.06),
        head_len=22 * size * rng.normal(1, 0.04),
        upper_arm=30 * size * rng.normal(1, 0.04),
        forearm=26 * size * rng.normal(1, 0.04),
        thigh=44 * size * rng.normal(1, 0.04),
        shank=44 * size * rng.normal(1, 0.04),
        girth=size * rng.normal(1, 0.1),
        skin=_colour(rng, skins[rng.integers(len(skins))], 8),
        hair=_colour(rng, hairs[rng.integers(len(hairs))], 10),
        shirt=_colour(rng, shirts[rng.integers(len(shirts))], 20),
        trousers=_colour(rng, trousers[rng.integers(len(trousers))], 12),
        crossed_legs=int(rng.random() < 0.25),
        age=int(rng.integers(22, 60)),
        sex=sex,
        posture=posture,
    )


def _z(worker: Worker, key: str) -> float:
    if key == "crossed_legs":
        return (worker.crossed_legs - 0.25) / 0.433
    mean, sd, _ = POSTURE[key]
    return (worker.posture[key] - mean) / sd


def risk_scores(worker: Worker) -> tuple[float, float]:
    ch = sum(w * _z(worker, k) for k, w in CH_WEIGHTS.items())
    nsp = sum(w * _z(worker, k) for k, w in NSP_WEIGHTS.items())
    return ch, nsp


def assign_labels(
    workers: list[Worker],
    cells: dict[tuple[int, int], int],
    rng: np.random.Generator,
    *, noise: float = DEFAULT_NOISE,
) -> None:
    """Labels with exactly the requested cell counts, drawn in proportion to each worker's
    risk: Gumbel-perturbed cell log-odds, then an assignment to cell slots (a draw from the
    risk model conditioned on the margins)."""
    if sum(cells.values()) != len(workers):
        raise SynthesisError(f"cell counts {cells} do not add up to {len(workers)} workers")
    slots = [cell for cell, n in cells.items() for _ in range(n)]
    score = np.zeros((len(workers), len(cells)))
    cell_list = list(cells)
    for i, w in enumerate(workers):
        r_ch, r_nsp = risk_scores(w)
        for j, (c, n) in enumerate(cell_list):
            score[i, j] = c * r_ch + n * r_nsp + c * n * BOTH_INTERACTION
    score += noise * rng.gumbel(size=score.shape)
    slot_cell = np.array([cell_list.index(c) for c in slots])
    _, cols = linear_sum_assignment(-score[:, slot_cell])
    for i, col in enumerate(cols):
        workers[i].ch, workers[i].nsp = slots[col]


def photo_counts(n_workers: int, n_photos: int, rng: np.random.Generator) -> np.ndarray:
    """1-3 photos per worker adding up to n_photos."""
    extra = n_photos - n_workers
    if not 0 <= extra <= 2 * n_workers:
        raise SynthesisError(
            f"{n_photos} photos cannot be spread 1-3 per worker over {n_workers} workers"
        )
    n3 = min(extra // 2, max(0, round(extra * 0.16)))
    counts = np.ones(n_workers, dtype=int)
    idx = rng.permutation(n_workers)
    counts[idx[:n3]] = 3
    counts[idx[n3 : n3 + extra - 2 * n3]] = 2
    return counts


def balanced_cells(n_subjects: int) -> dict[tuple[int, int], int]:
    """Equal workers in the four (CH, NSP) cells: the two labels independent."""
    base, extra = divmod(n_subjects, 4)
    return {c: base + (k < extra) for k, c in enumerate([(1, 1), (1, 0), (0, 1), (0, 0)])}


def scaled_cells(n_subjects: int) -> dict[tuple[int, int], int]:
    """The paper's cell proportions for any cohort size (exact at PAPER_SUBJECTS)."""
    total = sum(PAPER_CELLS.values())
    raw = {c: n * n_subjects / total for c, n in PAPER_CELLS.items()}
    cells = {c: max(1, math.floor(v)) for c, v in raw.items()}
    for c in sorted(raw, key=lambda c: raw[c] - math.floor(raw[c]), reverse=True):
        if sum(cells.values()) >= n_subjects:
            break
        cells[c] += 1
    while sum(cells.values()) > n_subjects:
        biggest = max(cells, key=cells.get)
        cells[biggest] -= 1
    return cells


def photo_posture(
    w: Worker, rng: np.random.Generator, contrast: float = 1.0
) -> dict[str, float]:
    """A worker's habitual posture, varied a little from photo to photo; `contrast` > 1
    draws every deviation from the population mean that many times larger."""
    jitter = {
        "cva": 1.5,
        "head_flexion": 3.0,
        "kyphosis": 2.0,
        "protraction": 0.6,
        "trunk_lean": 2.0,
        "pelvic_tilt": 2.0,
        "hip_angle": 3.0,
        "knee_angle": 4.0,
    }
    drawn = {k: v + float(rng.normal(0, jitter[k])) for k, v in w.posture.items()}
    if contrast == 1.0:
        return drawn
    return {k: POSTURE[k][0] + contrast * (v - POSTURE[k][0]) for k, v in drawn.items()}


def make_workers(
    n_subjects: int,
    seed: int,
    *, noise: float = DEFAULT_NOISE,
    cells: dict[tuple[int, int], int] | None = None,
) -> list[Worker]:
    rng = np.random.default_rng(seed)
    workers = [_new_worker(i, rng) for i in range(n_subjects)]
    site_p = np.array([0.45, 0.35, 0.20])
    for w in workers:
        w.site = SITES[int(rng.choice(len(SITES), p=site_p))].name
    assign_labels(workers, cells or scaled_cells(n_subjects), rng, noise=noise)
    return workers
