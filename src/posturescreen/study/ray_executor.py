"""The study grid on Ray: each (task, model, fold) job is a Ray task asking for its resources
(1 GPU where the cluster has GPUs, else N CPUs), on one machine or a cluster.

Who writes the run folder: this process (the driver), from the outputs the tasks return.
Workers never touch the run folder, so a cluster needs no shared storage for the grid, a
retried or duplicated task can never write twice or interleave, and a worker killed
mid-job leaves nothing behind: files are written atomically, predictions.csv last, by the
same `write` the local executor uses. The decoded-image cache travels once: the training
function (which holds it) is put into Ray's object store once and its arrays are read in
place (zero-copy) by every worker on a node.

Ray is an optional extra (`pip install 'posturescreen[ray]'`); it is imported only here.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from dataclasses import dataclass

import torch
from rich.console import Console

from posturescreen.errors import MissingExtraError, PostureScreenError
from posturescreen.progress import progress_bar
from posturescreen.runfolder import Job
from posturescreen.study.executors import JobFailure, TrainJob, WriteJob
from posturescreen.study.jobs import JobOutput

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class RayConnectionError(PostureScreenError):
    """The Ray cluster named by --ray-address cannot be reached."""


class RayResourcesError(PostureScreenError):
    """A job asks for more CPUs or GPUs than the whole Ray cluster has."""


def _ray():
    try:
        import ray
    except ImportError as e:
        raise MissingExtraError("--executor ray", "ray", "ray") from e
    return ray


@dataclass
class _Done:
    output: JobOutput
    host: str
    threads: int


def _run_on_worker(train: TrainJob, job: Job, threads: int) -> _Done:
    """One job inside a Ray worker; torch uses the CPUs the task asked for (unless the
    config fixes train.threads, which train_fold applies itself)."""
    torch.set_num_threads(threads)
    output = train(job, None)
    return _Done(output, socket.gethostname(), torch.get_num_threads())


def _worker_died(ray, error: BaseException) -> bool:
    """A failure of the machine, not of the job: worth another attempt."""
    kinds = tuple(getattr(ray.exceptions, name) for name in (
        "WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "ObjectLostError",
        "LocalRayletDiedError") if hasattr(ray.exceptions, name))
    return isinstance(error, kinds)


class RayExecutor:
    """Runs a wave of jobs as Ray tasks; the driver writes each result as it arrives.

    address: None starts a Ray instance on this machine; "auto" joins the cluster this
    machine belongs to; "ray://host:10001" connects through Ray Client.
    cpus_per_job: CPUs each job asks for, and the torch threads it uses unless the config
    sets train.threads. gpus_per_job: default 1 where the cluster has GPUs, else 0.
    max_retries: new attempts for a job whose worker or node died (a job that raises is
    not retried: its traceback is printed and the rest of the grid goes on).
    """

    def __init__(self, address: str | None = None, cpus_per_job: int = 1,
                 gpus_per_job: float | None = None, max_retries: int = 2,
                 console: Console | None = None):
        self.ray = _ray()
        self.address, self.max_retries = address, max_retries
        self.cpus_per_job = cpus_per_job
        self.gpus_per_job = gpus_per_job
        self.console = console or Console(stderr=True)
        self._started = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc) -> None:
        if self._started:
            self.ray.shutdown()

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        try:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=True,
                     logging_level=logging.WARNING)
        except ImportError as e:  # Ray Client (ray://) needs grpcio, from ray[client]
            raise MissingExtraError(f"--ray-address {self.address}", "ray", "ray[client]") from e
        except (ConnectionError, TimeoutError, ValueError) as e:
            where = self.address or "this machine"
            raise RayConnectionError(
                f"cannot start or reach Ray at {where}: {e}. For a cluster, start its head "
                "with `ray start --head` and pass --ray-address auto (on a cluster node) or "
                "ray://HEAD:10001") from e
        self._started = True

    def _resources(self) -> dict[str, float]:
        gpus = self.gpus_per_job
        if gpus is None:
            gpus = 1.0 if self.ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        return {"num_cpus": self.cpus_per_job, "num_gpus": gpus}

    def run(self, jobs: list[Job], train: TrainJob, write: WriteJob) -> list[JobFailure]:
        if not jobs:
            return []
        self._connect()
        ray = self.ray
        resources = self._resources()
        remote = ray.remote(_run_on_worker).options(max_retries=0, **resources)
        train_ref = ray.put(train)  # the image cache goes to the object store once
        cluster = ray.cluster_resources()
        for name, key in (("num_cpus", "CPU"), ("num_gpus", "GPU")):
            if resources[name] > cluster.get(key, 0):
                raise RayResourcesError(
                    f"each job asks for {resources[name]:g} {key}(s) but the Ray cluster has "
                    f"{cluster.get(key, 0):g}: lower --ray-cpus-per-job (or train.threads)")
        self.console.print(
            f"Ray: {len(jobs)} job(s) on {cluster.get('CPU', 0):g} CPU(s), "
            f"{cluster.get('GPU', 0):g} GPU(s); each job asks for "
            f"{resources['num_cpus']:g} CPU(s), {resources['num_gpus']:g} GPU(s)")

        def submit(job: Job):
            return remote.remote(train_ref, job, self.cpus_per_job)

        pending = {submit(job): job for job in jobs}
        attempts = dict.fromkeys(jobs, 1)
        started = time.perf_counter()
        failures: list[JobFailure] = []
        try:
            with progress_bar(self.console, elapsed=True, transient=False) as progress:
                bar = progress.add_task("study jobs on Ray", total=len(jobs))
                say = progress.console.print
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    ref = ready[0]
                    job = pending.pop(ref)
                    try:
                        done: _Done = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        if _worker_died(ray, e) and attempts[job] <= self.max_retries:
                            attempts[job] += 1
                            say(f"[yellow]worker lost[/yellow] {job}: {type(e).__name__}; "
                                f"attempt {attempts[job]} of {self.max_retries + 1}")
                            pending[submit(job)] = job
                            continue
                        cause = getattr(e, "cause", None) or e
                        trace = _ANSI.sub("", str(e))  # the worker's traceback
                        failures.append(JobFailure(job, f"{type(cause).__name__}: {cause}"
                                                   .splitlines()[0], trace))
                        say(f"[red]failed[/red] {job}:", highlight=False)
                        say(trace, markup=False, highlight=False)
                        progress.advance(bar)
                        continue
                    write(job, done.output)
                    info = done.output.fold_info
                    say(f"[green]done[/green] {job}: {info.get('train_seconds', 0):.0f} s on "
                        f"{done.host} ({done.threads} thread(s), "
                        f"{info.get('training_precision', '?')}), attempt {attempts[job]}; "
                        f"{time.perf_counter() - started:.0f} s into the wave",
                        highlight=False)
                    progress.advance(bar)
        finally:
            for ref in pending:  # interrupted: stop what is still queued or running
                ray.cancel(ref, force=True)
        return failures
