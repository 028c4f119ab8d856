"""The study grid on Ray (2 local CPUs): the same bytes as the local executor, a worker killed
mid-job retried, a failing job reported while the rest finishes, and resume across
executors. Ray starts once for the module; the tests skip where Ray is not installed, except
in CI (CI=true), where they must run."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from conftest import TINY_OVERRIDES
from posturescreen.cli import app
from posturescreen.config.study import load_config
from posturescreen.data.photo_arrays import StoredPhotos
from posturescreen.errors import MissingExtraError
from posturescreen.models.precision import training_precision
from posturescreen.pipeline import run_study
from posturescreen.report import build_report
from posturescreen.runfolder import Job
from posturescreen.study.executors import JobsFailedError, job_waves
from posturescreen.study.jobs import train_job, write_job
from posturescreen.study.prepare import prepare_study
from posturescreen.study.ray_executor import RayExecutor, RayResourcesError

TESTS = Path(__file__).resolve().parent
# two tasks x three folds of a 32 px model: six jobs of about a second each
GRID = [*TINY_OVERRIDES, "tasks=[{name: CH, positive: 'ch == 1'}, {name: NSP, positive: "
        "'nsp == 1'}]"]
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray():
    if os.environ.get("CI", "").lower() == "true":
        import ray
    else:
        ray = pytest.importorskip("ray", reason="Ray is not installed: pip install "
                                  "'posturescreen[ray]' (CI installs it with the dev extra)")
    # workers import this module (the test's job wrappers) and the package under test
    path = os.pathsep.join([str(TESTS), *sys.path])
    ray.init(num_cpus=2, include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def cfg(tiny_manifest):
    return load_config(None, [*GRID, f"data.manifest={tiny_manifest}"])


@pytest.fixture(scope="module")
def local_run(cfg, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("local") / "run"
    run_study(cfg, run_dir)
    return run_dir


def _executor(ray, **kwargs):
    out = io.StringIO()
    return RayExecutor(console=Console(file=out, width=200), **kwargs), out


def _same_results(a: Path, b: Path) -> None:
    for name in ("metrics.csv", "predictions.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


class KillOnce:
    """Kills its own worker process in the middle of the victim's first training attempt
    (a marker file tells attempts apart); checks the photos arrived without a copy."""

    def __init__(self, train, victim: Job, marker: Path):
        self.train, self.victim, self.marker = train, victim, marker

    def __call__(self, job, reporter):
        images = self.train.args[0].cache.arrays[32]
        # photos read from the shared photo cache (no pixels travel), or with the cache off
        # the read-only array of the object store
        if not isinstance(images, StoredPhotos) and images.flags.writeable:
            raise AssertionError("the image cache was copied into the worker")
        if job == self.victim and not self.marker.exists():
            self.marker.touch()
            return self.train(job, _KillAtStep(3))
        return self.train(job, reporter)


class _KillAtStep:
    def __init__(self, step: int):
        self.left = step

    def start_epoch(self, epoch, epochs, steps):
        pass

    def step(self):
        self.left -= 1
        if self.left == 0:
            os.kill(os.getpid(), signal.SIGKILL)

    def end_epoch(self, row):
        pass


class FailOne:
    def __init__(self, train, victim: Job):
        self.train, self.victim = train, victim

    def __call__(self, job, reporter):
        if job == self.victim:
            raise RuntimeError("boom in the victim job")
        return self.train(job, reporter)


def test_ray_grid_is_byte_identical_to_local(ray, cfg, local_run, tmp_path):
    executor, _ = _executor(ray)
    run_study(cfg, tmp_path / "ray", executor=executor)
    _same_results(local_run, tmp_path / "ray")
    # each worker resolved `precision: auto` as this machine does, and says so
    resolved = training_precision(torch.device("cpu"), "auto")
    for path in (tmp_path / "ray").glob("*/*/fold*/fold.json"):
        assert json.loads(path.read_text())["training_precision"] == resolved
    assert f"resolved on the machine that trained: {resolved}" in build_report(
        tmp_path / "ray").read_text()


def test_ray_grid_with_the_photo_cache_off_is_byte_identical(ray, cfg, local_run, tmp_path):
    """Cache off: the decoded photos travel through Ray's object store, read in place."""
    executor, _ = _executor(ray)
    train = KillOnce(None, Job("-", "-", 0), tmp_path / "unused")
    off = cfg.variant("data.photo_cache=false")
    ctx = prepare_study(off, tmp_path / "off", Console(file=io.StringIO()))
    assert isinstance(ctx.cache.arrays[32], np.ndarray)
    train.train = partial(train_job, ctx)
    assert executor.run(ctx.jobs(), train, partial(write_job, ctx.run_dir)) == []
    run_study(off, tmp_path / "off", executor=executor)  # every job done: results only
    _same_results(local_run, tmp_path / "off")


def test_worker_killed_mid_job_is_retried_and_the_grid_completes(ray, cfg, local_run, tmp_path):
    run_dir = tmp_path / "killed"
    ctx = prepare_study(cfg, run_dir, Console(file=io.StringIO()))
    # the photo cache on (the default): workers read the photos from its folder
    assert isinstance(ctx.cache.arrays[32], StoredPhotos)
    victim = Job("NSP", "test_resnet", 1)
    train = KillOnce(partial(train_job, ctx), victim, tmp_path / "killed-once")
    executor, out = _executor(ray, max_retries=1)
    assert executor.run(ctx.jobs(), train, partial(write_job, run_dir)) == []
    assert (tmp_path / "killed-once").exists()
    assert f"worker lost {victim}" in out.getvalue() and "attempt 2 of 2" in out.getvalue()
    run_study(cfg, run_dir, executor=executor)  # every job done: results only
    _same_results(local_run, run_dir)


def test_failing_job_is_reported_the_rest_finish_and_a_rerun_completes(ray, cfg, local_run,
                                                                       tmp_path):
    run_dir = tmp_path / "failed"
    ctx = prepare_study(cfg, run_dir, Console(file=io.StringIO()))
    victim = Job("CH", "test_resnet", 2)
    executor, out = _executor(ray)
    failures = executor.run(ctx.jobs(), FailOne(partial(train_job, ctx), victim),
                            partial(write_job, run_dir))
    assert [f.job for f in failures] == [victim]
    assert "boom in the victim job" in failures[0].error
    trace = failures[0].traceback
    assert 'raise RuntimeError("boom in the victim job")' in trace and "in __call__" in trace
    assert "boom in the victim job" in out.getvalue()
    assert [j for j in ctx.jobs() if not j.is_done(run_dir)] == [victim]
    assert not any(victim.directory(run_dir).glob("*"))  # nothing half-written
    error = JobsFailedError(failures, 6)
    assert str(error).startswith("1 of 6 job(s) failed (first: CH / test_resnet / fold 2: "
                                 "RuntimeError: boom")
    run_study(cfg, run_dir, executor=executor)
    _same_results(local_run, run_dir)


def test_run_started_locally_finishes_on_ray_with_the_same_numbers(ray, cfg, local_run,
                                                                   tmp_path):
    run_dir = tmp_path / "mixed"
    assert run_study(cfg, run_dir, max_jobs=2) is None
    done = {p: p.stat().st_mtime_ns for p in run_dir.glob("*/*/fold*/predictions.csv")}
    assert len(done) == 2
    executor, out = _executor(ray)
    run_study(cfg, run_dir, executor=executor)
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # not redone
    assert out.getvalue().count("done ") == 4
    _same_results(local_run, run_dir)


def test_a_job_larger_than_the_cluster_is_refused(ray, cfg, tmp_path):
    executor, _ = _executor(ray, cpus_per_job=64)
    with pytest.raises(RayResourcesError, match="asks for 64 CPU.*cluster has 2"):
        run_study(cfg, tmp_path / "big", executor=executor)


def test_without_ray_the_cli_says_how_to_install_it(tiny_manifest, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails
    result = CliRunner().invoke(
        app, ["study", "--data", str(tiny_manifest), "--out", str(tmp_path / "r"),
              "--executor", "ray", *[a for o in GRID for a in ("--set", o)]],
        terminal_width=200)
    assert result.exit_code == 2
    assert "pip install 'posturescreen[ray]'" in result.output
    assert not (tmp_path / "r").exists()
    with pytest.raises(MissingExtraError, match="--executor ray"):
        RayExecutor()


def test_ray_options_without_the_ray_executor_are_refused(tiny_manifest, tmp_path):
    result = CliRunner().invoke(app, ["study", "--data", str(tiny_manifest), "--out",
                                      str(tmp_path / "r"), "--ray-address", "auto"])
    assert result.exit_code == 2 and "need --executor ray" in result.output
    result = CliRunner().invoke(app, ["study", "--data", str(tiny_manifest), "--out",
                                      str(tmp_path / "r"), "--executor", "ray",
                                      "--ray-cpus-per-job", "2", "--set", "train.threads=1"],
                                terminal_width=200)
    assert result.exit_code == 2 and "differ" in result.output
    assert not (tmp_path / "r").exists()


def test_job_waves_run_dependencies_first_and_keep_order():
    jobs = [Job("CH", m, k) for k in range(2) for m in ("fusion", "cnn")]
    waves = job_waves(jobs, lambda job: job.model == "fusion")
    assert waves == [[Job("CH", "cnn", 0), Job("CH", "cnn", 1)],
                     [Job("CH", "fusion", 0), Job("CH", "fusion", 1)]]
    assert job_waves(jobs) == [jobs]
