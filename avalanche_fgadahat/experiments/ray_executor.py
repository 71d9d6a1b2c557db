"""The Ray executor (``--executor ray``): every (strategy, seed) run is one Ray task.

* **Resources.** Each task declares ``num_cpus`` (``--cpus-per-run``), ``num_gpus``
  (``--gpus-per-run``) and optionally ``memory`` (``--memory-per-run``); Ray starts a task
  when a node has them free. The driver keeps as many tasks submitted as the cluster can run
  at once, plus one, and submits the next whenever one finishes (a ``ray.wait`` loop).
  Torch uses ``threads`` threads inside a task (``--threads``, else ``--cpus-per-run``).
* **Data** (``ray_data.py``). Each seed's benchmark is built once: by the driver, which puts
  it into Ray's object store (``ray.put``) for the seed's tasks, so worker nodes need no
  dataset files; or, for Permuted MNIST (2.2 GB of permuted images for 10 tasks, far more
  than its files), by each worker from the shared ``--data-root``, once per worker process
  and seed. The object is released once the seed's last run has finished.
* **Results.** A task returns the run's record and its log's text (``runner.RunResult``);
  the driver writes the same files as the local executor. Nothing is left on worker disks.
* **Failures and Ctrl-C.** A task's error is reported as that run's failure and the other
  runs go on; Ctrl-C cancels the tasks in flight (``ray.cancel``) and shuts Ray down if this
  process started it; complete runs are saved, so the same command resumes.

Ray is imported when a sweep starts, not with this module.
"""

from __future__ import annotations

import logging
import socket
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from .executors import Outcome, RunTask, SweepPlan, describe_error, import_ray
from .runner import Log, RunResult, run_in_memory, save_result
from .ray_data import builds_on_workers, resolve_benchmark, ship_benchmark

#: what a task runs: ``(settings, strategy, seed, benchmark) → RunResult``
RunFunction = Callable[..., RunResult]


@contextmanager
def ray_session(address: str | None = None, what: str = "--executor ray") -> Iterator[Any]:
    """Ray, initialised at ``address`` (``None``: a local Ray on this machine's cores;
    ``"auto"``: the running cluster) unless already initialised; shut down on exit only if
    initialised here. No dashboard, and Ray's own logging at the error level."""
    ray = import_ray(what)
    started = not ray.is_initialized()
    if started:
        check_reachable(address)
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR,
                     log_to_driver=False)
        except ConnectionError as error:
            raise ValueError(f"--ray-address {address}: no Ray cluster to connect to ({error}); start one "
                             "with `ray start --head`, or leave --ray-address out for a local Ray") from error
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """For a ``host:port`` address, ``ValueError`` when nothing answers there within
    ``timeout_s`` (``ray.init`` would wait for minutes); other forms are left to Ray."""
    if not address or address in ("auto", "local") or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"--ray-address {address!r}: expected 'auto', host:port or ray://host:port")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ValueError(f"--ray-address {address}: nothing answers there ({type(error).__name__}: {error}); start "
                         "the head with `ray start --head` and pass the address it prints") from error


def _execute_task(run: RunFunction, task: RunTask, benchmark: Any, threads: int) -> RunResult:
    """A Ray task's body: ``threads`` torch threads, the strategy resolved again, the
    benchmark received (or built here), one run."""
    torch.set_num_threads(threads)
    return run(task.settings, task.strategy(), task.seed, resolve_benchmark(benchmark))


def remote_error(error: BaseException) -> str:
    """The one-line description of a task's error: the exception raised inside the task
    (``RayTaskError.cause``), else Ray's own error (a crashed worker, a cancelled task)."""
    cause = getattr(error, "cause", None)
    return describe_error(cause if isinstance(cause, BaseException) else error)


class RayExecutor:
    """Runs a sweep's runs as Ray tasks (see the module doc).

    :param address: ``ray.init`` address (``None``: local Ray; ``"auto"``: the running cluster).
    :param cpus_per_run: ``num_cpus`` of each task (> 0; fractions allowed).
    :param gpus_per_run: ``num_gpus`` of each task (>= 0; fractions share a GPU).
    :param memory_gb: ``memory`` of each task in GiB, or ``None`` (not declared).
    :param threads: torch threads in a task (default: ``cpus_per_run`` rounded down, at least 1).
    :param run: the task's run function (default ``runner.run_in_memory``; tests inject failures here).
    """

    remote = True

    def __init__(self, address: str | None = None, cpus_per_run: float = 1, gpus_per_run: float = 0,
                 memory_gb: float | None = None, threads: int | None = None, run: RunFunction | None = None):
        self.address = address
        self.cpus_per_run = cpus_per_run
        self.gpus_per_run = gpus_per_run
        self.memory_gb = memory_gb
        self.threads = threads or max(1, int(cpus_per_run))
        self.run_function = run or run_in_memory

    def resources(self) -> dict[str, Any]:
        """The ``.options(...)`` of every task."""
        options: dict[str, Any] = {"num_cpus": self.cpus_per_run, "num_gpus": self.gpus_per_run}
        if self.memory_gb is not None:
            options["memory"] = int(self.memory_gb * 1024**3)
        return options

    def slots(self, ray) -> int:
        """How many runs the cluster can hold at once; ``ValueError`` when not even one."""
        total = ray.cluster_resources()
        counts = [int(total.get("CPU", 0) // self.cpus_per_run)]
        if self.gpus_per_run:
            counts.append(int(total.get("GPU", 0) // self.gpus_per_run))
        if self.memory_gb is not None:
            counts.append(int(total.get("memory", 0) // (self.memory_gb * 1024**3)))
        if min(counts) < 1:
            raise ValueError(
                f"the Ray cluster cannot hold one run (--cpus-per-run {self.cpus_per_run:g}, --gpus-per-run "
                f"{self.gpus_per_run:g}, --memory-per-run {self.memory_gb}); the cluster has CPU "
                f"{total.get('CPU', 0):g}, GPU {total.get('GPU', 0):g}: ask for less per run"
            )
        return min(counts)

    def run(self, plan: SweepPlan, on_outcome: Callable[[Outcome], None], log: Log) -> None:
        """Submit the plan's runs as resources free up; write each result as it arrives."""
        if not plan.pending:
            return
        with ray_session(self.address) as ray:
            task_fn = ray.remote(_execute_task).options(**self.resources())
            limit = self.slots(ray) + 1
            log(f"ray: {limit - 1} run(s) at a time ({self.resources()}, {self.threads} torch thread(s) each)")
            queue = deque(plan.pending)
            left = Counter(seed for _, seed in plan.pending)
            benchmarks: dict[int, Any] = {}
            in_flight: dict[Any, tuple[Any, int]] = {}
            try:
                while queue or in_flight:
                    while queue and len(in_flight) < limit:
                        strategy, seed = queue.popleft()
                        if seed not in benchmarks:
                            log(f"{plan.settings.benchmark} benchmark for seed {seed}: " + (
                                f"each worker builds it from --data-root {plan.settings.data_root}"
                                if builds_on_workers(plan.settings) else "built here, shared through Ray's object store"))
                            benchmarks[seed] = ship_benchmark(ray, plan.settings, seed)
                        task = RunTask.of(plan.settings, strategy, seed)
                        ref = task_fn.remote(self.run_function, task, benchmarks[seed], self.threads)
                        in_flight[ref] = (strategy, seed)
                    ready, _ = ray.wait(list(in_flight), num_returns=1)
                    for ref in ready:
                        strategy, seed = in_flight.pop(ref)
                        left[seed] -= 1
                        if not left[seed]:
                            del benchmarks[seed]  # the seed's last run: release the object
                        self._finish(ray, ref, plan, strategy, seed, on_outcome, log)
            except KeyboardInterrupt:
                for ref in in_flight:
                    ray.cancel(ref, force=True)
                log(f"interrupted: {len(in_flight)} run(s) in flight cancelled, {len(queue)} not started; "
                    "the complete runs are saved: rerun the same command to resume")
                raise

    @staticmethod
    def _finish(ray, ref, plan: SweepPlan, strategy, seed: int, on_outcome, log: Log) -> None:
        """Fetch a finished task's result, write its files, report it."""
        try:
            result = ray.get(ref)
        except Exception as error:  # the task's own error, or Ray's (worker crashed, out of memory)
            on_outcome(Outcome(strategy, seed, error=remote_error(error), details=str(error)))
            return
        save_result(plan.out, strategy, seed, result)
        warnings = result.record["diagnostic_warnings"]
        if warnings:
            log(f"{strategy.label} seed {seed}: {len(warnings)} learning-diagnostic warning(s) "
                f"(docs/diagnostics.md) in {plan.out / result.record['log']}")
        on_outcome(Outcome(strategy, seed, record=result.record))
