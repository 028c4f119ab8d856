"""Where did the model look? Class activation maps (cams), body regions and region shares
(regions), pictures (pictures), and the driver for a whole run folder (run)."""

from posturescreen.explain.cams import PositiveLogit, compute_cams, overlay
from posturescreen.explain.regions import (
    align_to_body,
    enrichment_table,
    region_shares,
    regions_from_landmarks,
    summarize_shares,
)
from posturescreen.explain.run import OUTCOMES, explain_run

__all__ = [
    "OUTCOMES",
    "PositiveLogit",
    "align_to_body",
    "compute_cams",
    "enrichment_table",
    "explain_run",
    "overlay",
    "region_shares",
    "regions_from_landmarks",
    "summarize_shares",
]
