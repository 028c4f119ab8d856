"""What a model kind is given to fit one outer fold, what it gives back, and the interface
every kind implements (the registry in `kinds/__init__.py` lists them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Protocol

import numpy as np
import pandas as pd
import torch

from posturescreen.config.study import ModelConfig, TrainConfig
from posturescreen.models.cnn import Preprocessing
from posturescreen.models.linear import AngleModel, FusionModel
from posturescreen.models.training import Reporter
from posturescreen.stats.metrics import ThresholdRule


@dataclass
class FoldSplit:
    """Cohort index labels of a job's inner train, inner validation and test photos."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    y_train: np.ndarray
    y_val: np.ndarray
    y_test: np.ndarray


class ScoreReader(Protocol):
    """Another model's out-of-sample probabilities in this fold (the job layer reads them
    from that model's finished job): `which` is "val" (its inner validation scores) or
    "test" (its test-fold scores), `idx` the cohort index labels wanted, in order."""

    def __call__(self, model: str, which: Literal["val", "test"],
                 idx: np.ndarray) -> np.ndarray: ...


@dataclass
class FoldInputs:
    """Everything a kind may use to fit one (task, model, outer fold); no test-fold label is
    in here but `split.y_test`, which no kind reads before predicting."""

    split: FoldSplit
    groups: pd.Series  # subject id (text) per cohort index label
    model: ModelConfig
    train: TrainConfig
    threshold: ThresholdRule
    seed: int
    images: Callable[[int], np.ndarray] | None = None  # input size -> uint8 (N, 3, S, S)
    preprocessing: Preprocessing | None = None
    angles: pd.DataFrame | None = None  # angles.csv, indexed like the cohort
    scores: ScoreReader | None = None
    reporter: Reporter | None = None
    person_crop: bool = False


@dataclass
class FoldFit:
    """One fitted fold, not yet written: fold.json's fields and the out-of-sample scores."""

    info: dict
    val_prob: np.ndarray  # out-of-sample scores of the photos in `val_idx`
    test_prob: np.ndarray
    val_idx: np.ndarray | None = None  # default: the inner validation split
    y_val: np.ndarray | None = None
    state_dict: dict[str, torch.Tensor] | None = field(default=None, repr=False)  # a CNN's
    history: pd.DataFrame | None = None  # a CNN's training log
    linear_model: dict | None = None  # an angle or fusion model's numbers (JSON)


@dataclass(frozen=True)
class LinearParts:
    """A fold's linear models, as a bundle carries them."""

    angles: AngleModel | None = None
    fusion: FusionModel | None = None

    @classmethod
    def from_json(cls, linear: dict) -> LinearParts:
        """From a fold's linear_model.json."""
        return cls(AngleModel.from_dict(linear["angles"]) if "angles" in linear else None,
                   FusionModel.from_dict(linear["fusion"]) if "fusion" in linear else None)


class ModelKind:
    """One kind of model of the study grid. A subclass says what the kind uses (pixels,
    angles), which other model of the fold it reads, how it fits a fold and how a fold's
    parts turn into a probability on a new photo."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for reports and docs
    uses_pixels: ClassVar[bool] = False  # a CNN's weights: preprocessing, crop, CAMs
    uses_angles: ClassVar[bool] = False  # posture angles (landmarks)
    linear_parts: ClassVar[tuple[str, ...]] = ()  # keys of linear_model.json it writes

    def reads(self, model: ModelConfig) -> str | None:
        """The model of the same fold whose finished job this one reads (run it first)."""
        return None

    def weights_of(self, model: ModelConfig) -> str | None:
        """The model whose CNN checkpoint this model's predictions need (None: no CNN)."""
        return None

    def architecture(self, model: str, cnn: str | None) -> str | None:
        """The CNN architecture a bundle of this kind builds (None: no CNN)."""
        return None

    def describe(self, model: ModelConfig) -> str:
        """The model in the report's Methods, e.g. `CNN, starting weights: imagenet`."""
        raise NotImplementedError

    def wave(self, model: ModelConfig) -> int:
        """0 for a model that reads no other job; 1 for one that does."""
        return 0 if self.reads(model) is None else 1

    def fit(self, inputs: FoldInputs) -> FoldFit:
        raise NotImplementedError

    def probability(self, cnn_prob: float | None, parts: LinearParts,
                    angles: dict[str, float]) -> float:
        """One fold model's (raw) probability on a new photo."""
        raise NotImplementedError
