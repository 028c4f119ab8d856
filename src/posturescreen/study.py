"""The study grid: tasks × models × folds, each an independent job.

A job is done when its predictions.csv exists (written last, atomically); rerunning the
same command skips done jobs. Executors decide where jobs run; training code does not
know about them.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import yaml
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from safetensors.torch import save_file

from posturescreen import __version__
from posturescreen.config import StudyConfig
from posturescreen.data.images import ImageCache, build_image_cache
from posturescreen.data.manifest import Manifest, ManifestError, Problem, load_manifest
from posturescreen.files import (
    atomic_write,
    atomic_write_csv,
    atomic_write_text,
    ensure_writable_dir,
)
from posturescreen.folds import assert_disjoint, inner_split, outer_folds
from posturescreen.metrics import METRICS, format_estimate, paper_table, summarize
from posturescreen.models import Preprocessing, build_model, preprocessing_for
from posturescreen.progress import progress_bar
from posturescreen.tasks import all_task_labels, class_counts
from posturescreen.training import FoldData, Reporter, seed_everything, train_fold


class RunFolderConflict(RuntimeError):
    """The output folder holds a study made with another config or other data."""


@dataclass(frozen=True)
class Job:
    task: str
    model: str
    fold: int

    def directory(self, run_dir: Path) -> Path:
        return run_dir / safe_name(self.task) / safe_name(self.model) / f"fold{self.fold}"

    def seed(self, base: int) -> int:
        digest = hashlib.sha256(f"{base}/{self.task}/{self.model}/{self.fold}".encode()).digest()
        return int.from_bytes(digest[:4], "little")

    def __str__(self) -> str:
        return f"{self.task} / {self.model} / fold {self.fold}"


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


def library_versions() -> dict[str, str]:
    out = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "posturescreen": __version__,
    }
    for pkg in (
        "torch",
        "torchvision",
        "timm",
        "kornia",
        "numpy",
        "pandas",
        "scikit-learn",
        "scipy",
        "pillow",
        "grad-cam",
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


@dataclass
class StudyContext:
    """Everything a job needs, prepared once per study."""

    cfg: StudyConfig
    run_dir: Path
    cohort: pd.DataFrame  # validated manifest rows kept, + label_<task>, fold_<task>
    cache: ImageCache
    preprocessing: dict[str, Preprocessing]

    def jobs(self) -> list[Job]:
        out = []
        for task in self.cfg.tasks:
            n_folds = int(self.cohort[f"fold_{task.name}"].max()) + 1
            for model in self.cfg.models:
                out += [Job(task.name, model.name, k) for k in range(n_folds)]
        return out


class Executor(Protocol):
    """Runs jobs; calls fn(job, reporter) for each, reporter being its progress sink (or
    None). Another executor (Ray, a queue) only has to honour this."""

    def run(self, jobs: list[Job], fn: Callable[[Job, Reporter | None], None]) -> None: ...


class _RichReporter:
    def __init__(self, progress: Progress, epoch_bar: int, job: Job):
        self.progress, self.bar, self.job = progress, epoch_bar, job

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.progress.reset(
            self.bar, total=steps, description=f"{self.job} · epoch {epoch}/{epochs}"
        )

    def step(self) -> None:
        self.progress.advance(self.bar)

    def end_epoch(self, row: dict) -> None:
        pass


class LocalExecutor:
    """Runs jobs one after another in this process, with progress bars."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)

    def run(self, jobs: list[Job], fn: Callable[[Job, Reporter | None], None]) -> None:
        with progress_bar(self.console, elapsed=True, transient=False) as progress:
            overall = progress.add_task("study jobs", total=len(jobs))
            epoch_bar = progress.add_task("", total=1)
            for job in jobs:
                fn(job, _RichReporter(progress, epoch_bar, job))
                progress.advance(overall)


def _config_record(cfg: StudyConfig, data_hash: str) -> dict:
    return {
        "posturescreen_run": {
            "fingerprint": cfg.fingerprint(),
            "data_hash": data_hash,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": library_versions(),
        },
        **cfg.model_dump(mode="json"),
    }


def _check_run_folder(run_dir: Path, cfg: StudyConfig, data_hash: str | None) -> None:
    path = run_dir / "config.yaml"
    if not path.exists():
        return
    try:
        old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        meta = old.get("posturescreen_run", {})
    except (yaml.YAMLError, AttributeError) as e:
        raise RunFolderConflict(
            f"{path} is not a readable posturescreen config ({e}); use another --out"
        ) from e
    if meta.get("fingerprint") != cfg.fingerprint():
        new = cfg.model_dump(mode="json")
        diffs = _diff_keys({k: v for k, v in old.items() if k != "posturescreen_run"}, new)
        diffs = [d for d in diffs if d != "data.manifest"]
        raise RunFolderConflict(
            f"{run_dir} holds a study made with a different config (differs in: "
            f"{', '.join(diffs[:8]) or 'unknown keys'}). Results are never mixed: choose "
            "another --out, or delete that folder to start over."
        )
    if data_hash is not None and meta.get("data_hash") != data_hash:
        raise RunFolderConflict(
            f"{run_dir} holds a study made on different data (manifest or photos changed). "
            "Results are never mixed: choose another --out, or delete that folder."
        )


def _diff_keys(a: object, b: object, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
        return out
    return [] if a == b else [prefix]


def decode_sizes(cfg: StudyConfig) -> dict[int, str]:
    """Input size -> interpolation for every model of the study: the photos are decoded once
    at these sizes (JPEG draft decoding at the largest). Explain and export reuse it so they
    see exactly the study's pixels."""
    sizes: dict[int, str] = {}
    for m in cfg.models:
        p = preprocessing_for(m.name, m.image_size)
        sizes[p.input_size] = p.interpolation
    return sizes


def prepare_study(cfg: StudyConfig, run_dir: Path, console: Console | None = None) -> StudyContext:
    """Validate data, decode photos once, build labels and folds, write config and cohort."""
    console = console or Console(stderr=True)
    if cfg.data.manifest is None:
        raise ManifestError(
            Path("<none>"),
            [Problem("no manifest given: pass --data MANIFEST or set data.manifest")],
        )
    run_dir = Path(run_dir)
    _check_run_folder(run_dir, cfg, None)
    ensure_writable_dir(run_dir)

    manifest = load_manifest(cfg.data.manifest, cfg.data, allow_bad_images=True)
    preprocessing = {m.name: preprocessing_for(m.name, m.image_size) for m in cfg.models}
    sizes = decode_sizes(cfg)
    paths = [Path(p) for p in manifest.table["image_path"]]
    with progress_bar(console, elapsed=True) as progress:
        bar = progress.add_task(
            f"decoding {len(paths)} photos at {sorted(sizes)} px", total=len(paths)
        )
        cache = build_image_cache(paths, sizes, lambda n: progress.advance(bar, n))
    table = _drop_bad_images(manifest, cache, cfg, run_dir, console)

    h = hashlib.sha256(Path(cfg.data.manifest).read_bytes())
    h.update(cache.data_hash().encode())
    data_hash = h.hexdigest()[:16]
    _check_run_folder(run_dir, cfg, data_hash)

    cohort = _build_cohort(table, cfg)
    if not (run_dir / "config.yaml").exists():  # a resumed run keeps its original record
        atomic_write_text(
            run_dir / "config.yaml",
            yaml.safe_dump(_config_record(cfg, data_hash), sort_keys=False),
        )
    atomic_write_csv(run_dir / "cohort.csv", cohort.drop(columns=["image_path"]))
    counts = class_counts(
        cohort,
        {t.name: cohort[f"label_{t.name}"].dropna().astype(int) for t in cfg.tasks},
        cfg.data.subject_column,
    )
    atomic_write_csv(run_dir / "class_counts.csv", counts)
    _print_counts(counts, console)
    return StudyContext(cfg, run_dir, cohort, cache, preprocessing)


def _print_counts(counts: pd.DataFrame, console: Console) -> None:
    t = Table(title="cohort per task", title_justify="left")
    for col in ("task", "positives (subjects / photos)", "negatives (subjects / photos)"):
        t.add_column(col)
    for task, g in counts.groupby("task", sort=False):
        by = g.set_index("class")
        t.add_row(task, *[f"{by.at[c, 'subjects']} / {by.at[c, 'photos']}"
                          for c in ("positive", "negative")])
    console.print(t)


def _drop_bad_images(
    manifest: Manifest, cache: ImageCache, cfg: StudyConfig, run_dir: Path, console: Console
) -> pd.DataFrame:
    table = manifest.table
    bad = {**manifest.bad_images, **cache.errors}
    if not bad:
        return table
    problems = [
        Problem(msg, int(table.at[i, "row"]), cfg.data.image_column)
        for i, msg in sorted(bad.items())
    ]
    if not cfg.data.skip_bad_images:
        raise ManifestError(
            Path(cfg.data.manifest),
            problems
            + [
                Problem(
                    "the study stops before training on unreadable photos; fix or remove them, or "
                    "rerun with --skip-bad-images to train without them"
                )
            ],
        )
    skipped = pd.DataFrame(
        {
            "row": [p.row for p in problems],
            "image": [table.at[i, cfg.data.image_column] for i in sorted(bad)],
            "problem": [p.message for p in problems],
        }
    )
    atomic_write_csv(run_dir / "skipped_images.csv", skipped)
    console.print(
        f"[yellow]skipping {len(bad)} unreadable photo(s); listed in "
        f"{run_dir / 'skipped_images.csv'}[/yellow]"
    )
    return table.drop(index=sorted(bad))


def _build_cohort(table: pd.DataFrame, cfg: StudyConfig) -> pd.DataFrame:
    cohort = table.copy()
    labels = all_task_labels(cohort, cfg)
    subjects = cohort[cfg.data.subject_column].astype(str)
    site_col = cfg.data.site_column
    sites = cohort[site_col].astype(str) if site_col and site_col in cohort else None
    for task in cfg.tasks:
        y = labels[task.name]
        cohort[f"label_{task.name}"] = pd.Series(y, dtype="Int64")
        fold = outer_folds(
            y.to_numpy(),
            subjects[y.index].to_numpy(),
            cfg.cv.folds,
            cfg.seed,
            cfg.cv.scheme,
            sites[y.index].to_numpy() if sites is not None else None,
            f"task {task.name!r}",
        )
        cohort[f"fold_{task.name}"] = pd.Series(fold, index=y.index, dtype="Int64")
    return cohort


def run_job(ctx: StudyContext, job: Job, reporter: Reporter | None = None) -> bool:
    """Train and predict one (task, model, fold). Returns False if it was already done."""
    out = job.directory(ctx.run_dir)
    if (out / "predictions.csv").exists():
        return False
    cfg, cohort = ctx.cfg, ctx.cohort
    model_cfg = next(m for m in cfg.models if m.name == job.model)
    prep = ctx.preprocessing[job.model]
    label_col, fold_col = f"label_{job.task}", f"fold_{job.task}"
    in_task = cohort[cohort[label_col].notna()]
    subjects = in_task[cfg.data.subject_column].astype(str).to_numpy()
    labels = in_task[label_col].astype(int).to_numpy()
    is_test = in_task[fold_col].to_numpy() == job.fold
    inner_train, inner_val = inner_split(
        labels[~is_test],
        subjects[~is_test],
        cfg.cv.inner_val_fraction,
        job.seed(cfg.seed),
        f"{job}",
    )
    cache_idx = in_task.index.to_numpy()
    train_idx = cache_idx[~is_test][inner_train]
    val_idx = cache_idx[~is_test][inner_val]
    test_idx = cache_idx[is_test]
    # the disjointness of every split, asserted at run time
    assert_disjoint(subjects, is_test.astype(int))
    all_subjects = cohort[cfg.data.subject_column].astype(str)
    leaked = set(all_subjects[val_idx]) & set(all_subjects[train_idx])
    if leaked:  # not `assert`: this check must survive python -O
        raise AssertionError(f"{job}: subjects in both inner train and validation: "
                             f"{sorted(leaked)[:5]}")

    seed_everything(job.seed(cfg.seed))  # the new head's init must not depend on job order
    model, weights = build_model(job.model, model_cfg.pretrained)
    t0 = time.perf_counter()
    data = FoldData(
        ctx.cache.arrays[prep.input_size],
        train_idx,
        labels[~is_test][inner_train],
        val_idx,
        labels[~is_test][inner_val],
        test_idx,
    )
    result = train_fold(
        model,
        prep,
        data,
        cfg.train,
        cfg.threshold,
        job.seed(cfg.seed),
        reporter,
        pretrained=weights.source != "none",
    )
    seconds = time.perf_counter() - t0

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(
        out / "checkpoint.safetensors",
        lambda p: save_file({k: v.contiguous() for k, v in result.state_dict.items()}, str(p)),
    )
    atomic_write_csv(out / "train_log.csv", result.history)

    def _frame(idx: np.ndarray, prob: np.ndarray, y: np.ndarray) -> pd.DataFrame:
        rows = cohort.loc[idx]
        return pd.DataFrame(
            {
                "task": job.task,
                "model": job.model,
                "fold": job.fold,
                "row": rows["row"].values,
                cfg.data.subject_column: rows[cfg.data.subject_column].astype(str).values,
                "image": rows[cfg.data.image_column].values,
                "label": y,
                "prob": prob,
                "threshold": result.threshold,
                "pred": (prob >= result.threshold).astype(int),
            }
        )

    atomic_write_csv(
        out / "val_predictions.csv", _frame(val_idx, result.val_prob, labels[~is_test][inner_val])
    )
    atomic_write_text(
        out / "fold.json",
        json.dumps(
            {
                "task": job.task,
                "model": job.model,
                "fold": job.fold,
                "seed": job.seed(cfg.seed),
                "best_epoch": result.best_epoch,
                "epochs_run": len(result.history),
                "threshold": result.threshold,
                "threshold_rule": result.threshold_rule,
                "batchnorm_frozen": result.batchnorm_frozen,
                "training_precision": result.training_precision,
                "n_train": len(train_idx),
                "n_val": len(val_idx),
                "n_test": len(test_idx),
                "preprocessing": prep.__dict__,
                "weights": weights.__dict__,
                "train_seconds": round(seconds, 2),
            },
            indent=2,
        ),
    )
    # written last: its presence marks the job done
    atomic_write_csv(out / "predictions.csv", _frame(test_idx, result.test_prob, labels[is_test]))
    return True


def collect_predictions(run_dir: Path, jobs: Iterable[Job]) -> pd.DataFrame:
    frames = []
    for job in jobs:
        path = job.directory(run_dir) / "predictions.csv"
        frames.append(pd.read_csv(path, dtype={"fold": int}, keep_default_na=False, na_values=[""]))
    return pd.concat(frames, ignore_index=True)


def markdown_table(table: pd.DataFrame) -> str:
    cols = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    lines += [
        "| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)
    ]
    return "\n".join(lines)


def write_results(ctx: StudyContext, predictions: pd.DataFrame) -> pd.DataFrame:
    cfg = ctx.cfg
    subject_col = cfg.data.subject_column
    predictions[subject_col] = predictions[subject_col].astype(str)
    metrics, per_fold = summarize(
        predictions, subject_col, cfg.metrics.bootstrap, cfg.seed, cfg.metrics.ci_level
    )
    atomic_write_csv(ctx.run_dir / "predictions.csv", predictions)
    atomic_write_csv(ctx.run_dir / "metrics.csv", metrics)
    atomic_write_csv(ctx.run_dir / "metrics_per_fold.csv", per_fold)
    level = round(cfg.metrics.ci_level * 100)
    md = [
        f"# {cfg.name}: results",
        "",
        f"Primary: pooled out-of-fold estimate with a subject-level bootstrap {level}% CI "
        f"({cfg.metrics.bootstrap} resamples, seed {cfg.seed}). Threshold: "
        f"{_threshold_text(cfg)}.",
        "",
        markdown_table(paper_table(metrics, "bootstrap")),
        "",
        f"Secondary (the paper's style): mean over the {cfg.cv.folds} folds ± "
        f"t(0.975, k−1)·SD/√k, clipped to [0, 1].",
        "",
        markdown_table(paper_table(metrics, "fold_t")),
        "",
    ]
    atomic_write_text(ctx.run_dir / "metrics.md", "\n".join(md))
    return metrics


def _threshold_text(cfg: StudyConfig) -> str:
    if cfg.threshold.rule == "youden":
        return "Youden's J on each fold's inner validation split (never the test fold)"
    return f"fixed at {cfg.threshold.value}"


def print_results(metrics: pd.DataFrame, run_dir: Path, console: Console | None = None) -> None:
    """One table per task: metrics down, models across, so it fits an 80-column terminal."""
    console = console or Console()
    boot = metrics[metrics["ci_kind"] == "bootstrap"]
    for task, g in boot.groupby("task", sort=False):
        t = Table(
            title=f"{task}",
            title_justify="left",
            caption="out-of-fold estimate (95% CI, subject-level bootstrap)",
        )
        t.add_column("metric")
        models = list(dict.fromkeys(g["model"]))
        for m in models:
            t.add_column(m, no_wrap=True)
        for name in METRICS:
            cells = []
            for m in models:
                r = g[(g["model"] == m) & (g["metric"] == name)].iloc[0]
                cells.append(format_estimate(r.estimate, r.ci_low, r.ci_high))
            t.add_row(name, *cells)
        console.print(t)
    console.print(f"results: {run_dir.resolve()}  (metrics.csv, metrics.md)")


def run_study(
    cfg: StudyConfig,
    run_dir: Path,
    executor: Executor | None = None,
    console: Console | None = None,
    max_jobs: int | None = None,
) -> pd.DataFrame | None:
    """Run (or resume) the whole grid; returns the tidy metrics, or None when stopped early
    by `max_jobs`."""
    console = console or Console(stderr=True)
    ctx = prepare_study(cfg, Path(run_dir), console)
    executor = executor or LocalExecutor(console)
    jobs = ctx.jobs()
    todo = [j for j in jobs if not (j.directory(ctx.run_dir) / "predictions.csv").exists()]
    if len(todo) < len(jobs):
        console.print(f"resuming: {len(jobs) - len(todo)} of {len(jobs)} jobs already done")
    if max_jobs is not None:
        todo = todo[:max_jobs]

    executor.run(todo, lambda job, reporter: run_job(ctx, job, reporter))
    if any(not (j.directory(ctx.run_dir) / "predictions.csv").exists() for j in jobs):
        return None
    metrics = write_results(ctx, collect_predictions(ctx.run_dir, jobs))
    if cfg.cams.run:
        from posturescreen.explain import explain_run

        explain_run(ctx.run_dir, method=cfg.cams.method, write_overlays=cfg.cams.overlays,
                    console=console)
    if cfg.report:
        from posturescreen.report import build_report

        console.print(f"report: {build_report(ctx.run_dir).resolve()}")
    return metrics


__all__ = [
    "Job",
    "LocalExecutor",
    "RunFolderConflict",
    "StudyContext",
    "prepare_study",
    "run_job",
    "run_study",
    "print_results",
    "METRICS",
]


def load_run(run_dir: Path) -> tuple[StudyConfig, pd.DataFrame]:
    """The config and cohort of a finished (or partly finished) run folder."""
    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise RunFolderConflict(f"{run_dir} is not a posturescreen run folder (no config.yaml)")
    record = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    record.pop("posturescreen_run", None)
    cfg = StudyConfig.model_validate(record)
    cohort = pd.read_csv(run_dir / "cohort.csv", keep_default_na=False, na_values=[""],
                         dtype={cfg.data.subject_column: str, cfg.data.image_column: str})
    return cfg, cohort
