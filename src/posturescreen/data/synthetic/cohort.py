"""Writing a synthetic cohort: photos, region masks, manifest.csv (the design.md §2 schema)
and generator.json (every generating parameter), plus a contact sheet."""

from __future__ import annotations

import io
import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from posturescreen.data.body import REGION_IDS
from posturescreen.data.synthetic.population import (
    BOTH_INTERACTION,
    CH_WEIGHTS,
    DEFAULT_NOISE,
    NSP_WEIGHTS,
    PAPER_SUBJECTS,
    POSTURE,
    SITES,
    SynthesisError,
    make_workers,
    paper_photo_count,
    photo_counts,
    photo_posture,
    scaled_cells,
)
from posturescreen.data.synthetic.render import LANDMARKS, camera_for_photo, render_photo

LANDMARK_REGION = {
    "ear": "head_neck",
    "eye": "head_neck",
    "nose": "head_neck",
    "c7": "head_neck",
    "shoulder": "upper_limbs",
    "elbow": "upper_limbs",
    "wrist": "upper_limbs",
    "hip": "trunk",
    "knee": "lower_body",
    "ankle": "lower_body",
}
assert set(LANDMARK_REGION) == set(LANDMARKS)


MAX_SUBJECTS = 5000  # the label assignment is a workers × workers matching
MAX_SIZE = 2048


def check_settings(n_subjects: int, size: int, n_photos: int | None, *, noise: float,
                   contrast: float) -> None:
    """Refuse impossible or absurd settings at once, before any work."""
    if not 8 <= n_subjects <= MAX_SUBJECTS:
        raise SynthesisError(f"subjects must be between 8 and {MAX_SUBJECTS}, got {n_subjects}")
    if not 64 <= size <= MAX_SIZE:
        raise SynthesisError(f"photo size must be between 64 and {MAX_SIZE} px, got {size}")
    if n_photos is not None and not n_subjects <= n_photos <= 3 * n_subjects:
        raise SynthesisError(f"{n_photos} photos cannot be spread 1-3 per worker over "
                             f"{n_subjects} workers")
    if not (math.isfinite(contrast) and 0.0 < contrast <= 4.0):
        raise SynthesisError(f"posture contrast must be in (0, 4], got {contrast}")
    if not (math.isfinite(noise) and 0.0 <= noise <= 100.0):
        raise SynthesisError(f"label noise must be between 0 and 100, got {noise}")


def generate_cohort(
    out: Path | str,
    n_subjects: int = PAPER_SUBJECTS,
    seed: int = 0,
    *, size: int = 384,
    n_photos: int | None = None,
    noise: float = DEFAULT_NOISE,
    progress=None,
    contrast: float = 1.0,
    cells: dict[tuple[int, int], int] | None = None,
) -> Path:
    """Write photos, masks, manifest.csv and generator.json into `out`; returns the
    manifest path. The same arguments give the same bytes.

    `contrast` exaggerates how posture is drawn (labels are unchanged): 1 is the realistic
    cohort; about 2.5 gives a cohort small CPU-trained models can learn, used to check
    that CAMs land on the region that drives each label. `cells` sets the workers per
    (CH, NSP) cell instead of the paper's proportions (equal cells make CH and NSP
    independent)."""
    check_settings(n_subjects, size, n_photos, noise=noise, contrast=contrast)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    if n_photos is None:
        n_photos = paper_photo_count(n_subjects)
    cells = cells or scaled_cells(n_subjects)
    workers = make_workers(n_subjects, seed, noise=noise, cells=cells)
    counts = photo_counts(n_subjects, n_photos, np.random.default_rng([seed, 1]))
    sites = {s.name: s for s in SITES}
    rows, records = [], []
    for i, w in enumerate(workers):
        for k in range(int(counts[i])):
            rng = np.random.default_rng([seed, 2, i, k])
            posture = photo_posture(w, rng, contrast)
            camera = camera_for_photo(sites[w.site], rng)
            img, mask, landmarks = render_photo(
                w, posture, camera, site=sites[w.site], size=size, rng=rng
            )
            stem = f"{w.subject_id}_{k + 1}"
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=camera["jpeg_quality"])
            (out / "images" / f"{stem}.jpg").write_bytes(buf.getvalue())
            mask.save(out / "masks" / f"{stem}.png", optimize=False)
            row = {
                "subject_id": w.subject_id,
                "image": f"images/{stem}.jpg",
                "ch": w.ch,
                "nsp": w.nsp,
                "site": w.site,
                "age": w.age,
                "sex": w.sex,
                "facing": w.facing,
                "mask": f"masks/{stem}.png",
            }
            for name, (x, y) in landmarks.items():
                row[f"{name}_x"], row[f"{name}_y"] = round(x, 1), round(y, 1)
            rows.append(row)
            records.append(
                {
                    "image": row["image"],
                    "subject_id": w.subject_id,
                    "posture": {k2: round(v, 3) for k2, v in posture.items()},
                    "camera": {
                        k2: round(v, 4) if isinstance(v, float) else v for k2, v in camera.items()
                    },
                }
            )
            if progress is not None:
                progress(1)
    pd.DataFrame(rows).to_csv(out / "manifest.csv", index=False)
    worker_records = []
    for w in workers:
        d = asdict(w)
        d["posture"] = {k: round(v, 3) for k, v in d["posture"].items()}
        for key in (
            "height_scale",
            "trunk_len",
            "neck_len",
            "head_len",
            "upper_arm",
            "forearm",
            "thigh",
            "shank",
            "girth",
        ):
            d[key] = round(d[key], 3)
        worker_records.append(d)
    generator = {
        "generator": "posturescreen.data.synthetic",
        "seed": seed,
        "size": size,
        "n_subjects": n_subjects,
        "n_photos": n_photos,
        "label_noise": noise,
        "posture_contrast": contrast,
        "cells": {f"ch={c},nsp={n}": v for (c, n), v in cells.items()},
        "risk_model": {"CH": CH_WEIGHTS, "NSP": NSP_WEIGHTS, "both_interaction": BOTH_INTERACTION},
        "posture_parameters": {
            k: {"mean": m, "sd": s, "meaning": t} for k, (m, s, t) in POSTURE.items()
        },
        "regions": REGION_IDS,
        "landmark_regions": LANDMARK_REGION,
        "sites": [asdict(s) for s in SITES],
        "workers": worker_records,
        "photos": records,
    }
    (out / "generator.json").write_text(json.dumps(generator, indent=1))
    return out / "manifest.csv"


def contact_sheet(
    manifest: Path | str, out: Path | str, *, n: int = 12, columns: int = 4, tile: int = 256
) -> Path:
    """A PNG grid of the first photo of n workers, labelled with their diagnoses."""
    manifest = Path(manifest)
    table = pd.read_csv(manifest).drop_duplicates("subject_id").head(n)
    rows = math.ceil(len(table) / columns)
    sheet = Image.new("RGB", (columns * tile, rows * (tile + 18)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, r in enumerate(table.itertuples()):
        img = Image.open(manifest.parent / r.image).convert("RGB").resize((tile, tile))
        x, y = (k % columns) * tile, (k // columns) * (tile + 18)
        sheet.paste(img, (x, y))
        label = {(1, 1): "CH+NSP", (1, 0): "CH", (0, 1): "NSP", (0, 0): "control"}[(r.ch, r.nsp)]
        draw.text((x + 4, y + tile + 3), f"{r.subject_id}  site {r.site}  {label}", fill=(0, 0, 0))
    out = Path(out)
    sheet.save(out)
    return out
