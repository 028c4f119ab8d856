import numpy as np
import torch
from kornia import augmentation as K

from posturescreen.config.study import AugmentConfig, ThresholdConfig, TrainConfig
from posturescreen.models.cnn import build_model, preprocessing_for
from posturescreen.models.training import (
    FoldData,
    build_augmentation,
    train_fold,
)


def test_side_view_augmentation_has_no_vertical_flip():
    aug = build_augmentation(AugmentConfig(), 32)
    kinds = {type(m) for m in aug}
    assert K.RandomHorizontalFlip in kinds and K.RandomVerticalFlip not in kinds
    out = aug(torch.rand(4, 3, 32, 32))
    assert out.shape == (4, 3, 32, 32) and out.min() >= 0 and out.max() <= 1


def _fold_data(n=40, size=32, seed=0):
    rng = np.random.default_rng(seed)
    y = np.array([0, 1] * (n // 2))
    images = rng.integers(0, 60, (n, 3, size, size), dtype=np.uint8)
    images[y == 1, :, :8, :8] = 250
    idx = np.arange(n)
    return FoldData(images, idx[:24], y[:24], idx[24:32], y[24:32], idx[32:])


def _train(pretrained: bool, freeze="auto", seed=1):
    torch.manual_seed(0)
    model, _ = build_model("test_efficientnet", "none")
    cfg = TrainConfig(epochs=2, batch_size=8, threads=1, freeze_batchnorm=freeze)
    prep = preprocessing_for("test_efficientnet", 32)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    result = train_fold(model, prep, _fold_data(), cfg=cfg, threshold=ThresholdConfig(), seed=seed,
                        pretrained=pretrained)
    after = {k: result.state_dict[k] for k in before}
    return result, before, after


def test_batchnorm_frozen_for_pretrained_not_from_scratch():
    result, before, after = _train(pretrained=True)
    assert result.batchnorm_frozen
    assert all(torch.equal(before[k], after[k]) for k in before)
    result, before, after = _train(pretrained=False)
    assert not result.batchnorm_frozen
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_batchnorm_statistics_adapt_by_default():
    result, before, after = _train(pretrained=True, freeze=TrainConfig().freeze_batchnorm)
    assert not result.batchnorm_frozen
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_training_is_deterministic_on_cpu():
    a, _, _ = _train(pretrained=False, seed=5)
    b, _, _ = _train(pretrained=False, seed=5)
    assert np.array_equal(a.test_prob, b.test_prob)
    assert a.threshold == b.threshold and a.history["train_loss"].equals(b.history["train_loss"])
    assert len(a.history) == 2 and 1 <= a.best_epoch <= 2


def test_compiled_training_keeps_plain_state_dict():
    torch.manual_seed(0)
    model, _ = build_model("test_resnet", "none")
    cfg = TrainConfig(epochs=1, batch_size=8, threads=2, compile=True)
    prep = preprocessing_for("test_resnet", 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train_fold(model, prep, _fold_data(), cfg=cfg, threshold=ThresholdConfig(), seed=3)
    assert set(result.state_dict) == set(before)  # no `_orig_mod.` prefixes
    assert any(not torch.equal(before[k], result.state_dict[k]) for k in before)
    assert np.isfinite(result.test_prob).all()
