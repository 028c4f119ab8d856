"""The report's figures (matplotlib's object API: no pyplot state, no backend switch), as
PNG data URLs so the HTML stays one self-contained file."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, roc_curve


def png_data_url(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def file_data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def roc_figure(preds: pd.DataFrame, task: str, models: list[str]) -> str:
    fig = Figure(figsize=(3.6 * len(models), 3.6))
    axes = fig.subplots(1, len(models), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        g = preds[(preds["task"] == task) & (preds["model"] == model)]
        for k, f in g.groupby("fold"):
            if f["label"].nunique() == 2:
                fpr, tpr, _ = roc_curve(f["label"], f["prob"])
                ax.plot(fpr, tpr, lw=1, alpha=0.6, label=f"fold {k}")
        if g["label"].nunique() == 2:
            fpr, tpr, _ = roc_curve(g["label"], g["prob"])
            ax.plot(fpr, tpr, lw=2.5, color="black", label="pooled")
        ax.plot([0, 1], [0, 1], ls=":", color="grey")
        ax.set(title=f"{task} · {model}", xlabel="1 − specificity", ylabel="sensitivity",
               xlim=(0, 1), ylim=(0, 1), aspect="equal")
        ax.legend(fontsize=7, loc="lower right")
    return png_data_url(fig)


def calibration_figure(preds: pd.DataFrame, task: str, models: list[str]) -> tuple[str, dict]:
    fig = Figure(figsize=(4.2, 4.2))
    ax = fig.subplots()
    briers = {}
    for model in models:
        g = preds[(preds["task"] == task) & (preds["model"] == model)]
        briers[model] = float(brier_score_loss(g["label"], g["prob"]))
        bins = max(2, min(10, len(g) // 10))
        frac, mean = calibration_curve(g["label"], g["prob"], n_bins=bins, strategy="quantile")
        ax.plot(mean, frac, marker="o", label=f"{model} (Brier {briers[model]:.3f})")
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set(title=f"{task}: reliability (recalibrated, pooled)", xlabel="predicted probability",
           ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1), aspect="equal")
    ax.legend(fontsize=7)
    return png_data_url(fig), briers


def region_chart(summary: pd.DataFrame) -> str | None:
    s = summary[(summary["outcome"] == "all") & (summary["region"] != "background")]
    s = s.dropna(subset=["enrichment"])
    if s.empty:
        return None
    labels = [f"{t}\n{m}" for t, m in dict.fromkeys(zip(s["task"], s["model"], strict=True))]
    regions = list(dict.fromkeys(s["region"]))
    fig = Figure(figsize=(max(4.5, 1.6 * len(labels)), 3.4))
    ax = fig.subplots()
    width = 0.8 / len(regions)
    for i, region in enumerate(regions):
        vals = [s[(s["task"] == t) & (s["model"] == m) & (s["region"] == region)]["enrichment"]
                .mean() for t, m in dict.fromkeys(zip(s["task"], s["model"], strict=True))]
        ax.bar(np.arange(len(labels)) + i * width, vals, width, label=region)
    ax.axhline(1.0, color="grey", ls=":")
    ax.set_xticks(np.arange(len(labels)) + width * (len(regions) - 1) / 2, labels, fontsize=8)
    ax.set_ylabel("CAM enrichment (share ÷ area)")
    ax.legend(fontsize=7)
    return png_data_url(fig)
