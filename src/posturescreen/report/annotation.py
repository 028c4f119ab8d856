"""The report's annotation QC section: who placed the landmarks the study read, how many
photos each rater annotated, how often a suggestion was accepted unchanged, and how two
raters agreed — from the summary `annotate --export` wrote beside the manifest, which the
study copied into its run folder (annotation_qc.json). Numbers only, no pictures."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from posturescreen import runfolder as rf
from posturescreen.posture.raters import formatted_angles, formatted_points


def _share(value) -> str:
    return "n/a (no suggestions)" if value is None else f"{100 * value:.0f}%"


def annotation_section(run_dir: Path) -> dict | None:
    """What the section shows, or None when the run folder has no annotation QC."""
    path = Path(run_dir) / rf.ANNOTATION_QC
    if not path.exists():
        return None
    try:
        qc = json.loads(path.read_text("utf-8"))
        raters = [{"rater": r["rater"], "photos": r["photos"],
                   "finished": r["photos_finished"],
                   "points": ", ".join(f"{k} {v}" for k, v in r["points"].items()),
                   "accepted": _share(r.get("accepted_unchanged_share")),
                   "suggester": ", ".join(r.get("suggester") or []) or "none",
                   "period": f"{r.get('first') or '?'} – {r.get('last') or '?'}"}
                  for r in qc["raters"]]
        pairs = []
        for p in qc.get("inter_rater") or []:
            points, angles = pd.DataFrame(p["points"]), pd.DataFrame(p["angles"])
            pairs.append({
                "raters": p["raters"], "photos": p["photos"],
                "points": formatted_points(points).to_dict(orient="records")
                if len(points) else [],
                "angles": formatted_angles(angles).to_dict(orient="records")
                if len(angles) else [],
            })
    except (OSError, ValueError, KeyError, TypeError) as e:
        return {"error": f"{path.name} could not be read ({e})"}
    return {"exported_rater": qc.get("exported_rater"), "landmarks": qc.get("landmarks", []),
            "photos": qc.get("photos_in_manifest"), "raters": raters, "pairs": pairs,
            "resampling": qc.get("inter_rater_resampling", "")}
