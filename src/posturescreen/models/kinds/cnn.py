"""The CNN kind: a torchvision/timm CNN fine-tuned on the photo (or the person cut from it),
selected on the inner validation split."""

from __future__ import annotations

from posturescreen.config.study import ModelConfig
from posturescreen.models.cnn import build_model
from posturescreen.models.kinds.base import FoldFit, FoldInputs, LinearParts, ModelKind
from posturescreen.models.training import FoldData, seed_everything, train_fold


class CnnKind(ModelKind):
    name = "cnn"
    summary = "a CNN on the photo (the person cropped from it with pose.crop)"
    uses_pixels = True

    def weights_of(self, model: ModelConfig) -> str | None:
        return model.name

    def architecture(self, model: str, cnn: str | None) -> str | None:
        return model

    def describe(self, model: ModelConfig) -> str:
        size = f", {model.image_size} px" if model.image_size else ""
        return f"CNN, starting weights: {model.pretrained}{size}"

    def fit(self, inputs: FoldInputs) -> FoldFit:
        split, prep, mcfg = inputs.split, inputs.preprocessing, inputs.model
        seed_everything(inputs.seed)  # the new head's init must not depend on job order
        model, weights = build_model(mcfg.name, mcfg.pretrained)
        data = FoldData(inputs.images(prep.input_size), split.train, split.y_train, split.val,
                        split.y_val, split.test)
        result = train_fold(
            model,
            prep,
            data,
            cfg=inputs.train,
            threshold=inputs.threshold,
            seed=inputs.seed,
            reporter=inputs.reporter,
            pretrained=weights.source != "none",
        )
        info = {
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "threshold": result.threshold,
            "threshold_rule": result.threshold_rule,
            "batchnorm_frozen": result.batchnorm_frozen,
            "training_precision": result.training_precision,
            "person_crop": inputs.person_crop,
            "preprocessing": prep.__dict__,
            "weights": weights.__dict__,
        }
        return FoldFit(
            info,
            result.val_prob,
            result.test_prob,
            state_dict=result.state_dict,
            history=result.history,
        )

    def probability(
        self, cnn_prob: float | None, parts: LinearParts, angles: dict[str, float]
    ) -> float:
        return float(cnn_prob)
