"""The model kinds of a study grid, one class each (cnn, angles, fusion): what a kind uses,
how it fits a fold, how its bundle predicts. Everything else asks the registry
(`kind_of`) instead of switching on the kind's name."""

from __future__ import annotations

from posturescreen.config.study import ModelConfig
from posturescreen.models.kinds.angles import AnglesKind
from posturescreen.models.kinds.base import (
    FoldFit,
    FoldInputs,
    FoldSplit,
    LinearParts,
    ModelKind,
    ScoreReader,
)
from posturescreen.models.kinds.cnn import CnnKind
from posturescreen.models.kinds.fusion import FusionKind

KINDS: dict[str, ModelKind] = {k.name: k for k in (CnnKind(), AnglesKind(), FusionKind())}


def kind_of(model: ModelConfig | str) -> ModelKind:
    """The kind of a model config (or a kind's name)."""
    name = model if isinstance(model, str) else model.kind
    return KINDS[name]


__all__ = ["KINDS", "FoldFit", "FoldInputs", "FoldSplit", "LinearParts", "ModelKind",
           "ScoreReader", "kind_of"]
