"""Study configuration: a typed pydantic model, loaded from YAML, overridable from the CLI.

Precedence: defaults < YAML file < command-line overrides. Unknown keys are errors (a typo
must never silently fall back to a default).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from posturescreen.config.data import DataConfig
from posturescreen.config.names import (
    MAX_NAME,
    check_model_name,
    check_task_name,
    sharing_a_folder,
)
from posturescreen.config.overrides import (
    apply_model_override,
    format_validation_error,
    parse_override,
    set_dotted,
)
from posturescreen.config.pose import PoseConfig
from posturescreen.config.query import parse_query
from posturescreen.config.safe_yaml import YamlInputError, read_yaml_file
from posturescreen.config.strict import _Strict
from posturescreen.errors import ConfigError

__all__ = ["ConfigError", "StudyConfig", "load_config", "parse_override"]


def _check_query(text: str | None) -> str | None:
    if text is not None:
        parse_query(text)  # QueryError is a ValueError: pydantic names the field
    return text


class TaskConfig(_Strict):
    name: str = Field(min_length=1, max_length=MAX_NAME,
                      description="the task's name in tables, folders and bundles: letters, "
                      "digits, _ + -, starting with a letter or digit")
    positive: str = Field(description="query selecting the positive photos (README: Tasks)")
    negative: str | None = Field(
        None, description="query selecting the negatives; default from `negatives`"
    )

    _queries = field_validator("positive", "negative")(_check_query)
    _name = field_validator("name")(check_task_name)


class ModelConfig(_Strict):
    name: str = Field(min_length=1, max_length=MAX_NAME,
                      description="cnn: a torchvision/timm architecture (vgg19, resnet50, "
                      "efficientnet_b5, any timm name); angles and fusion: any name of "
                      "letters, digits, _ . + -, starting with a letter or digit")
    kind: Literal["cnn", "angles", "fusion"] = Field(
        "cnn",
        description="cnn: a CNN on the photo (name = torchvision/timm architecture); angles: "
        "a logistic regression on posture angles; fusion: the CNN named in `cnn` and the "
        "angles together (fitted inside each training fold)",
    )
    pretrained: str = Field("imagenet", description="cnn: imagenet | none | path to a weights file")
    image_size: int | None = Field(
        None, ge=16, le=2048, description="cnn: default from the weights' metadata")
    cnn: str | None = Field(None, max_length=MAX_NAME,
                            description="fusion: the name of this study's CNN to fuse")
    _names = field_validator("name", "cnn")(check_model_name)
    C: float | Literal["auto"] = Field(
        "auto", description="angles/fusion: the angle model's inverse L2 penalty; auto: "
        "chosen inside each training fold by a grouped cross-validation (log-loss) among "
        "0.01, 0.1, 1 and 10")

    @field_validator("C")
    @classmethod
    def _positive_C(cls, v: float | str) -> float | str:
        if v != "auto" and not 0 < v <= 1e6:
            raise ValueError("C must be auto or a number in (0, 1e6]")
        return v

    @model_validator(mode="after")
    def _fusion_names_a_cnn(self) -> ModelConfig:
        if self.kind == "fusion" and not self.cnn:
            raise ValueError("a fusion model needs `cnn`: the name of the study's CNN to fuse")
        if self.kind != "fusion" and self.cnn:
            raise ValueError("`cnn` is only for fusion models")
        return self


class PrivacyConfig(_Strict):
    blur_faces: bool = Field(
        True, description="blur faces in every picture the report, CAMs and pages show")


class CVConfig(_Strict):
    folds: int = Field(4, ge=2, le=20, description="outer cross-validation folds")
    scheme: Literal["stratified_group", "leave_site_out"] = Field(
        "stratified_group", description="stratified_group: folds stratified by the label, "
        "grouped by worker; leave_site_out: one fold per site (data.site_column)")
    inner_val_fraction: float = Field(
        0.2, gt=0.05, lt=0.5, description="share of a fold's training workers held out as "
        "its inner validation split (early stopping, checkpoint, threshold, recalibration)")


class AugmentConfig(_Strict):
    crop_scale_min: float = Field(0.8, gt=0.1, le=1.0, description="random resized crop: "
                                  "the smallest share of the picture kept")
    horizontal_flip: bool = Field(True, description="mirror at random (people face either way "
                                  "in side views; never a vertical flip)")
    brightness: float = Field(0.2, ge=0, le=1, description="colour jitter: brightness")
    contrast: float = Field(0.2, ge=0, le=1, description="colour jitter: contrast")
    saturation: float = Field(0.2, ge=0, le=1, description="colour jitter: saturation")


class TrainConfig(_Strict):
    epochs: int = Field(30, ge=1, le=1000, description="the most epochs a fold trains")
    batch_size: int = Field(16, ge=2, le=1024, description="photos per training step")
    lr: float = Field(3e-4, gt=0, lt=1, description="AdamW's peak learning rate (lower it if "
                      "the inner-validation AUC sits at 0.5)")
    weight_decay: float = Field(0.05, ge=0, le=10, description="AdamW's weight decay")
    warmup_epochs: float = Field(1.0, ge=0, le=1000, description="linear warm-up before the "
                                 "cosine decay, in epochs")
    patience: int = Field(5, ge=1, description="epochs without inner-val AUC gain before stopping")
    class_weighted_loss: bool = Field(
        True, description="weight the positive class by negatives/positives in the loss")
    freeze_batchnorm: bool | Literal["auto"] = Field(
        False,
        description="keep BatchNorm running statistics fixed while fine-tuning; auto: only "
        "when starting from pretrained weights. Off by default: frozen statistics stopped "
        "lite0 learning the synthetic CH task at lr 5e-4 (docs/results.md)",
    )
    augment: AugmentConfig = Field(default_factory=AugmentConfig,
                                   description="augmentation of the training batches")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="training steps: auto = bf16 autocast on CUDA where supported and on CPUs "
        "with native bf16 (AVX-512 BF16, AMX), else fp32; predictions are always fp32",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when available, else the CPU")
    channels_last: bool = Field(
        True, description="NHWC memory layout: faster convolutions on CPU and GPU, same maths"
    )
    compile: bool = Field(
        False,
        description="torch.compile the training forward pass (no gain measured on CPU for "
        "resnet50; costs compile time per fold; for GPU runs to try)",
    )
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default: all cores")
    deterministic: bool = Field(False, description="deterministic algorithms (slower on GPU)")


class ThresholdConfig(_Strict):
    rule: Literal["youden", "fixed"] = Field(
        "youden", description="youden: chosen on the inner validation split, never the test fold"
    )
    estimate: Literal["binormal", "empirical"] = Field(
        "binormal",
        description="how Youden's cutoff is estimated on the validation scores: binormal "
                    "(normal logits per class with a common variance, Fluss et al. 2005: the "
                    "midpoint of the class means; stable on small splits) or "
                    "empirical (the best observed cutoff; on a small split of a weak model "
                    "it can put every test photo on one side)")
    value: float = Field(0.5, gt=0, lt=1, description="the threshold when rule is fixed")


# CAM method name -> pytorch-grad-cam class: the one table config and explain share
CAM_METHODS = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "hirescam": "HiResCAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
}


def check_cam_method(name: str) -> str:
    if name not in CAM_METHODS:
        raise ConfigError(f"unknown CAM method {name!r}; choose from {', '.join(CAM_METHODS)}")
    return name


class CamConfig(_Strict):
    run: bool = Field(False, description="compute CAMs and region shares when the study ends")
    method: str = Field("gradcam", description="one of " + ", ".join(CAM_METHODS))
    overlays: bool = Field(True, description="write an overlay PNG per photo")

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        return check_cam_method(v)


class MetricsConfig(_Strict):
    bootstrap: int = Field(
        5000, ge=50, le=1_000_000,
        description="subject-level bootstrap resamples (docs/results.md: the Monte-Carlo "
        "error of the bounds at 5000)")
    ci_level: float = Field(0.95, gt=0.5, lt=1, description="confidence level of every "
                            "interval")
    primary_level: Literal["worker", "photo"] = Field(
        "worker", description="the unit the printed tables lead with; both are always written")
    worker_aggregate: Literal["mean", "median", "max"] = Field(
        "mean", description="how a worker's photos' probabilities become the worker's")
    pooled_auc: Literal["fold_stratified", "recalibrated"] = Field(
        "fold_stratified", description="the pooled AUC: fold-stratified (only pairs scored by "
        "the same fold model; docs/results.md says why), or of the probabilities "
        "recalibrated per fold")
    comparison_family: Literal["task", "study"] = Field(
        "task", description="Holm's correction within each task, or over every comparison")


PAPER_TASKS = [
    TaskConfig(name="CH", positive="ch == 1"),
    TaskConfig(name="NSP", positive="nsp == 1"),
    TaskConfig(name="CH+NSP", positive="ch == 1 and nsp == 1"),
]
PAPER_MODELS = [
    ModelConfig(name="vgg19"),
    ModelConfig(name="resnet50"),
    ModelConfig(name="efficientnet_b5"),
    # beyond the paper: the angle model and the paper's best CH model fused with it
    ModelConfig(name="angles", kind="angles"),
    ModelConfig(name="resnet50+angles", kind="fusion", cnn="resnet50"),
]


class StudyConfig(_Strict):
    name: str = Field("study", max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+\- ]*$",
                      description="the default run folder is runs/<name>")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="0 … 2^32−1 (NumPy's seed range)")
    data: DataConfig = Field(default_factory=DataConfig, description="the manifest and its "
                             "columns")
    tasks: list[TaskConfig] = Field(
        default_factory=lambda: [t.model_copy() for t in PAPER_TASKS],
        description="the tasks: positives and negatives by query (default: the paper's CH, "
        "NSP, CH+NSP vs controls)")
    negatives: Literal["controls", "rest"] = Field(
        "controls", description="default negatives: controls (query below) or everyone else"
    )
    controls: str = Field("ch == 0 and nsp == 0", description="query selecting controls")
    models: list[ModelConfig] = Field(
        default_factory=lambda: [m.model_copy() for m in PAPER_MODELS],
        description="the models of the grid (default: the paper's three CNNs, the angle model "
        "and resnet50 fused with it)")
    cv: CVConfig = Field(default_factory=CVConfig, description="cross-validation")
    train: TrainConfig = Field(default_factory=TrainConfig, description="CNN training")
    threshold: ThresholdConfig = Field(default_factory=ThresholdConfig,
                                       description="how the decision threshold is chosen")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig,
                                   description="statistics: levels, intervals, comparisons")
    cams: CamConfig = Field(default_factory=CamConfig, description="class activation maps")
    pose: PoseConfig = Field(default_factory=PoseConfig,
                             description="posture landmarks, angles and the person crop")
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig,
                                   description="de-identification of every picture shown")
    report: bool = Field(True, description="write report.html and results.json at the end")
    sensitivity: list[str] = Field(
        default_factory=list, max_length=10,
        description="sensitivity analyses: each an override (e.g. negatives=rest) run as a "
        "second study in <run>/sensitivity/ and reported beside the main results")

    _controls_query = field_validator("controls")(_check_query)

    @model_validator(mode="after")
    def _unique_names(self) -> StudyConfig:
        for kind, names in (
            ("task", [t.name for t in self.tasks]),
            ("model", [m.name for m in self.models]),
        ):
            if not names:
                raise ValueError(f"at least one {kind} is needed")
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind} names must be unique, repeated: {dupes}")
            for group in sharing_a_folder(names):
                raise ValueError(f"{kind} names {' and '.join(map(repr, group))} would share "
                                 "one folder (folder names ignore case); rename one")
        cnns = {m.name for m in self.models if m.kind == "cnn"}
        for m in self.models:
            if m.kind == "fusion" and m.cnn not in cnns:
                raise ValueError(f"fusion model {m.name!r}: cnn {m.cnn!r} is not a CNN of this "
                                 f"study (CNNs: {sorted(cnns)})")
        return self

    def variant(self, override: str) -> StudyConfig:
        """This study with one override applied: a sensitivity analysis (no further ones,
        no CAMs, no report of its own)."""
        base = self.model_dump(mode="json")
        base.update(sensitivity=[], report=False)
        base["cams"]["run"] = False
        return load_config(None, [override], base=base)

    def cnn_models(self) -> list[ModelConfig]:
        return [m for m in self.models if m.kind == "cnn"]

    def uses_angles(self) -> bool:
        return any(m.kind != "cnn" for m in self.models)

    def negative_query(self, task: TaskConfig) -> str:
        if task.negative is not None:
            return task.negative
        if self.negatives == "controls":
            return self.controls
        return f"not ({task.positive})"

    def fingerprint(self) -> str:
        """Hash of everything that changes results (not the manifest's path: the data hash is
        recorded separately)."""
        blob = json.dumps(results_fields(self.model_dump(mode="json")), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def results_fields(config: dict[str, Any]) -> dict[str, Any]:
    """A config as JSON data (a run's config.yaml without its header, or model_dump) less what
    does not change results: what the fingerprint hashes, and what a refused resume names."""
    payload = json.loads(json.dumps(config))  # a deep copy
    data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
    data.pop("manifest", None)
    for described in ("subject_unit", "labels_from_landmarks"):  # words for the report
        data.pop(described, None)
    for where in ("photo_cache", "cache_dir", "cache_compression", "decode_workers"):
        data.pop(where, None)  # where photos are decoded, not what they are
    payload.pop("cams", None)  # explaining or reporting does not change results
    payload.pop("report", None)
    payload.pop("privacy", None)
    payload.pop("sensitivity", None)  # its studies live in their own folders
    return payload


def load_config(
    path: Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> StudyConfig:
    tree: dict[str, Any] = dict(base or {})
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            loaded = read_yaml_file(Path(path))
        except YamlInputError as e:
            raise ConfigError(f"config file {path}: {e}") from e
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must be a mapping of keys to values")
        tree.update(loaded)
        # relative manifest paths in a config file are relative to that file
        data = tree.get("data")
        manifest = data.get("manifest") if isinstance(data, dict) else None
        if isinstance(manifest, str) and manifest and not Path(manifest).is_absolute():
            tree["data"]["manifest"] = str((Path(path).parent / manifest).resolve())
    for text in overrides or []:
        key, value = parse_override(text)
        if key.startswith("models.") and key.count(".") == 1:
            apply_model_override(tree, key.split(".", 1)[1], value,
                                 default_models=[m.model_dump(mode="json") for m in PAPER_MODELS])
        else:
            set_dotted(tree, key, value)
        source += f" + {text if len(text) <= 80 else text[:80] + '…'}"
    try:
        cfg = StudyConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from e
    for override in cfg.sensitivity:  # each must make a valid study too, checked now
        try:
            cfg.variant(override)
        except ConfigError as e:
            raise ConfigError(f"sensitivity analysis {override!r}: {e}") from e
    return cfg
