"""The base of every config section: unknown keys are errors, .inf and .nan are refused."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Strict(BaseModel):
    # a typo is an error, never a silent default; .inf and .nan are never a setting
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
