"""Synthetic cohort: side-view photos of seated office workers whose labels come from
posture through a documented risk model, so models and CAMs can be checked against truth.

population (workers, posture, risk model, labels) → pose (skeleton) → render (photo, region
mask, landmarks) → cohort (files, manifest.csv, generator.json). See docs/synthetic.md.
"""

from posturescreen.data.synthetic.cohort import (
    LANDMARK_REGION,
    check_settings,
    contact_sheet,
    generate_cohort,
)
from posturescreen.data.synthetic.population import (
    BOTH_INTERACTION,
    CH_WEIGHTS,
    DEFAULT_NOISE,
    NSP_WEIGHTS,
    PAPER_CELLS,
    PAPER_PHOTOS,
    PAPER_SUBJECTS,
    POSTURE,
    SITES,
    Site,
    SynthesisError,
    Worker,
    assign_labels,
    balanced_cells,
    make_workers,
    paper_photo_count,
    photo_counts,
    photo_posture,
    risk_scores,
    scaled_cells,
)
from posturescreen.data.synthetic.render import LANDMARKS, camera_for_photo, render_photo
from posturescreen.data.synthetic.skeleton import Skeleton, pose_skeleton
from posturescreen.data.synthetic.variants import extend_cohort

__all__ = [
    "BOTH_INTERACTION", "CH_WEIGHTS", "DEFAULT_NOISE", "LANDMARKS", "LANDMARK_REGION",
    "NSP_WEIGHTS", "PAPER_CELLS", "PAPER_PHOTOS", "PAPER_SUBJECTS", "POSTURE", "SITES",
    "Site", "Skeleton", "SynthesisError", "Worker", "assign_labels", "balanced_cells",
    "camera_for_photo", "check_settings", "contact_sheet", "extend_cohort",
    "generate_cohort", "make_workers", "paper_photo_count", "photo_counts",
    "photo_posture", "pose_skeleton", "render_photo", "risk_scores", "scaled_cells",
]
