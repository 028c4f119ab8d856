"""Log a finished study to MLflow: its config as params, every metric with both CI kinds,
and the report, results.json and metric tables as artifacts."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from posturescreen import runfolder as rf
from posturescreen.errors import MissingExtraError


def _flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = str(v)[:5000]  # MLflow caps a param value's length
    return out


def _metric_name(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", ".".join(parts))


def log_to_mlflow(run_dir: Path, tracking_uri: str | None = None) -> str:
    """Returns the MLflow run id. Default store: a local file store in RUN_DIR/mlruns."""
    # a study's numbers stay with the user: no usage telemetry leaves the machine
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        import mlflow
    except ImportError as e:
        raise MissingExtraError("logging to MLflow", "mlflow", "mlflow-skinny") from e
    run_dir = Path(run_dir)
    cfg, _ = rf.load_run(run_dir)
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or (
        (run_dir / "mlruns").resolve().as_uri())
    if uri.startswith("file:"):
        # MLflow 3 keeps file stores in maintenance mode behind this switch; a local file
        # store is what a study folder should carry
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("posturescreen")
    metrics = pd.read_csv(run_dir / rf.METRICS)
    with mlflow.start_run(run_name=cfg.name) as run:
        mlflow.log_params(_flatten(cfg.model_dump(mode="json")))
        values = {}
        for r in metrics.itertuples():
            base = _metric_name(r.task, r.model, r.metric, r.ci_kind)
            for suffix, v in (("", r.estimate), (".ci_low", r.ci_low),
                              (".ci_high", r.ci_high)):
                if pd.notna(v):
                    values[base + suffix] = float(v)
        mlflow.log_metrics(values)
        for name in (rf.REPORT_HTML, rf.RESULTS_JSON, rf.METRICS, rf.METRICS_MD):
            if (run_dir / name).exists():
                mlflow.log_artifact(str(run_dir / name))
        return run.info.run_id
