"""The learned landmark models a bundle carries (angle and fusion bundles of a study with
`pose.landmarks: learned`): what they are, their files, which of them each fold averages,
and loading them with their checksums checked."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator
from safetensors import SafetensorError
from safetensors.torch import load_file

from posturescreen.errors import PostureScreenError
from posturescreen.models.cnn import sha256_file
from posturescreen.models.landmarks import LandmarkNet, LandmarkSpec, load_landmark_net

NAME = r"^[A-Za-z0-9_]{1,64}$"


class LandmarkBundleError(PostureScreenError):
    """A bundle's landmark models cannot be read."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class LandmarkModelFile(_Strict):
    name: str = Field(pattern=NAME)
    file: str = Field(pattern=r"^landmarks_[A-Za-z0-9_]{1,64}\.safetensors$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class BundleLandmarks(_Strict):
    """The landmark models (one spec: same points, backbone and input) and their files."""

    names: list[str] = Field(min_length=1, max_length=64)
    backbone: str = Field(min_length=1, max_length=200)
    input_size: int = Field(ge=32, le=2048)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    frozen_blocks: int = Field(ge=0, le=64)
    sigma: float = Field(gt=0, le=100)
    models: list[LandmarkModelFile] = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _distinct(self) -> BundleLandmarks:
        if len({m.name for m in self.models}) < len(self.models):
            raise ValueError("each landmark model may appear once")
        if any(s <= 0 for s in self.std):
            raise ValueError("std must be positive")
        return self

    @classmethod
    def describe(cls, spec: LandmarkSpec, files: list[LandmarkModelFile]) -> BundleLandmarks:
        return cls(**{k: v for k, v in spec.to_dict().items()}, models=files)

    def spec(self) -> LandmarkSpec:
        return LandmarkSpec(tuple(self.names), self.backbone, self.input_size, self.mean,
                            self.std, self.frozen_blocks, self.sigma)


def model_file(name: str) -> str:
    return f"landmarks_{name}.safetensors"


def load_landmark_nets(folder: Path, landmarks: BundleLandmarks, shown: Path
                       ) -> dict[str, LandmarkNet]:
    """Every landmark model of a bundle folder, checked against its sha256."""
    spec = landmarks.spec()
    nets = {}
    for m in landmarks.models:
        path = folder / m.file
        if not path.is_file() or path.is_symlink():
            raise LandmarkBundleError(f"{shown}: {m.file} is missing")
        if sha256_file(path) != m.sha256:
            raise LandmarkBundleError(f"{shown}: {m.file} does not match its checksum")
        try:
            nets[m.name] = load_landmark_net(spec, load_file(str(path)))
        except (SafetensorError, OSError, RuntimeError, ValueError) as e:
            raise LandmarkBundleError(f"{shown}: {m.file} is not a landmark model of "
                                      f"{spec.backbone} ({str(e).splitlines()[0][:200]})") from e
    return nets
