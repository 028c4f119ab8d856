"""Body regions, shared by the synthetic generator (its region masks) and the CAM region
shares: one list, whose index is the value in a region mask."""

from __future__ import annotations

REGIONS = ("background", "head_neck", "trunk", "upper_limbs", "lower_body")
REGION_IDS = {name: i for i, name in enumerate(REGIONS)}
