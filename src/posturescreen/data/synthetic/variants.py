"""A large synthetic cohort, quickly: grow a rendered cohort to any number of photos with
seeded photometric variations of its rendered photos (benchmarks of data loading at
10,000-100,000 photos, where rendering every photo would take hours).

Each new photo is a later visit of the same worker: one of that worker's rendered photos with
its own exposure (per-channel gain and offset) and JPEG quality, so every photo has distinct
bytes (its own cache entry) while the worker, its labels, landmarks and region mask stay
those of the rendered photo. The posture is not re-drawn: a worker's visits differ in
lighting and compression only. Folds group by worker, so no visit leaks across folds; but
the photos are near-duplicates, which makes such a cohort right for measuring speed and
memory and wrong for judging models (its rows say so: `variant_of`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from posturescreen.data.synthetic.population import SynthesisError

MAX_PHOTOS = 1_000_000


def extend_cohort(manifest: Path | str, n_photos: int, *, seed: int = 0,
                  progress=None) -> Path:
    """Add photos to a generated cohort until it holds `n_photos`; rewrites manifest.csv
    (new rows after the rendered ones) and writes variants.json (each new photo's source and
    variation). The same arguments give the same bytes."""
    manifest = Path(manifest)
    table = pd.read_csv(manifest, dtype={"subject_id": str})
    n_base = len(table)
    if not n_base <= n_photos <= MAX_PHOTOS:
        raise SynthesisError(f"cannot grow a cohort of {n_base} rendered photos to "
                             f"{n_photos} (at most {MAX_PHOTOS:,})")
    folder = manifest.parent
    rows, records = [], []
    for k in range(n_photos - n_base):
        rng = np.random.default_rng([seed, 3, k])
        base = table.iloc[k % n_base]  # visits spread evenly over the rendered photos
        gain = rng.uniform(0.9, 1.1, size=3)
        offset = rng.uniform(-8.0, 8.0, size=3)
        quality = int(rng.integers(85, 96))
        with Image.open(folder / base["image"]) as img:
            pixels = np.asarray(img.convert("RGB"), dtype=np.float32)
        varied = np.clip(pixels * gain + offset, 0, 255).round().astype(np.uint8)
        stem = Path(base["image"]).stem
        name = f"images/{stem}_v{k + 1}.jpg"
        buf = io.BytesIO()
        Image.fromarray(varied).save(buf, "JPEG", quality=quality)
        (folder / name).write_bytes(buf.getvalue())
        rows.append({**base.to_dict(), "image": name, "variant_of": base["image"]})
        records.append({"image": name, "variant_of": base["image"],
                        "gain": [round(float(g), 4) for g in gain],
                        "offset": [round(float(o), 3) for o in offset], "jpeg_quality": quality})
        if progress is not None:
            progress(1)
    table["variant_of"] = ""
    pd.concat([table, pd.DataFrame(rows)], ignore_index=True).to_csv(manifest, index=False)
    (folder / "variants.json").write_text(json.dumps(
        {"seed": seed, "rendered": n_base, "photos": n_photos, "variants": records}))
    return manifest
