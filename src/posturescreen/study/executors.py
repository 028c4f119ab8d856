"""Executors: where the jobs of a study's grid run. An executor runs one wave of jobs:
`train(job, reporter)` wherever it likes (the function pickles, so it may travel), then
`write(job, output)` in the calling process, which owns the run folder. The local executor
runs them one after another here; executor_ray.py spreads them over a Ray cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from rich.console import Console
from rich.progress import Progress

from posturescreen.errors import PostureScreenError
from posturescreen.models.training import Reporter
from posturescreen.progress import progress_bar
from posturescreen.runfolder import Job
from posturescreen.study.jobs import JobOutput


@dataclass
class JobFailure:
    """A job that raised: its one-line error and the full traceback."""

    job: Job
    error: str
    traceback: str


class JobsFailedError(PostureScreenError):
    """Some jobs of the grid failed; the others are written and a rerun retries only these."""

    def __init__(self, failures: list[JobFailure], total: int):
        first = failures[0]
        super().__init__(
            f"{len(failures)} of {total} job(s) failed (first: {first.job}: {first.error}); "
            "their tracebacks are printed above. Finished jobs are saved: fix the cause and "
            "rerun the same command to run only the missing ones.")
        self.failures = failures


TrainJob = Callable[[Job, Reporter | None], JobOutput]
WriteJob = Callable[[Job, JobOutput], None]


class Executor(Protocol):
    """Runs one wave of jobs: out = train(job, reporter) wherever it likes (train pickles, so
    it may travel), then write(job, out) in the calling process, which owns the run folder.
    Returns the jobs that failed; an executor may also stop at the first failure by raising."""

    def run(self, jobs: list[Job], train: TrainJob, write: WriteJob) -> list[JobFailure]: ...


def job_waves(jobs: list[Job], wave_of: Callable[[Job], int] = lambda job: 0
              ) -> list[list[Job]]:
    """Jobs grouped into waves, run one wave after another: a job may read what jobs of
    earlier waves wrote (a fusion model of fold k reads the CNN of fold k). Order within a
    wave is kept."""
    waves: dict[int, list[Job]] = {}
    for job in jobs:
        waves.setdefault(wave_of(job), []).append(job)
    return [waves[w] for w in sorted(waves)]


class _RichReporter:
    def __init__(self, progress: Progress, epoch_bar, job: Job):
        self.progress, self.bar, self.job = progress, epoch_bar, job

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.progress.reset(
            self.bar, total=steps, description=f"{self.job} · epoch {epoch}/{epochs}",
            visible=True,
        )

    def step(self) -> None:
        self.progress.advance(self.bar)

    def end_epoch(self, row: dict) -> None:
        pass


class LocalExecutor:
    """Runs jobs one after another in this process, with progress bars."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)

    def run(self, jobs: list[Job], train: TrainJob, write: WriteJob) -> list[JobFailure]:
        """Stops at the first failure (its exception propagates), as a local run always has."""
        with progress_bar(self.console, elapsed=True, transient=False) as progress:
            overall = progress.add_task("study jobs", total=len(jobs))
            # shown by the first epoch: angle and fusion jobs have none
            epoch_bar = progress.add_task("", total=1, visible=False)
            for job in jobs:
                write(job, train(job, _RichReporter(progress, epoch_bar, job)))
                progress.advance(overall)
        return []
