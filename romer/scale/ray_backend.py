"""Campaign trials on a Ray cluster (`romer run --backend ray [--address ADDR]`).

One actor per worker loads the model once and keeps it across trials; each trial (one chip
seed with its methods, or the clean reference) is one actor task that reserves the worker's
CPUs and GPUs. The driver appends each trial's records to results.jsonl as the trial returns,
so a resumed campaign skips them. A worker that dies mid-trial is restarted by Ray and its trial
run again from the start: nothing it half-did was written, and the log keeps each unit once.

Numbers equal the local back end's bit for bit when both run torch on the same number of
threads (a worker uses its reserved CPUs); otherwise float sums may differ in the last bits.
"""

from __future__ import annotations

import os
from typing import Iterator

from romer.campaign.spec import RunSpec
from romer.campaign.trials import Trial, run_trial
from romer.errors import RomerError

class TrialWorker:
    """The Ray actor: a work bench (model, tokens) loaded once."""

    def __init__(self, spec_json: str, threads: int) -> None:
        import torch

        from romer.campaign.run import Workbench

        torch.set_num_threads(threads)
        self.bench = Workbench.load(RunSpec.model_validate_json(spec_json))

    def describe(self) -> dict:
        return self.bench.describe()

    def run(self, trial: Trial) -> list[dict]:
        records = []
        for record in run_trial(self.bench, trial):
            records.append(record)
            self.measured(record)
        return records

    def measured(self, record: dict) -> None:
        """Called as each unit is measured, before the trial returns (a subclass may act here)."""


def _cause(error: Exception) -> str:
    """The one line that says what went wrong inside a worker."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in reversed(lines):
        if "RomerError:" in line:
            return line.split("RomerError:", 1)[1].strip()
    return lines[-1][:200] if lines else type(error).__name__


class RayBackend:
    """Trials as Ray actor tasks on `workers` actors of `cpus` CPUs and `gpus` GPUs each."""

    def __init__(self, address: str | None = None, workers: int | None = None, cpus: int = 1, gpus: float = 0,
                 retries: int = 2, worker: type = TrialWorker) -> None:
        """`worker`: the actor class, `TrialWorker` or a subclass of it."""
        if cpus < 1 or gpus < 0 or (workers is not None and workers < 1):
            raise RomerError("a Ray worker needs --worker-cpus ≥ 1, --worker-gpus ≥ 0 and --workers ≥ 1")
        self.address, self.workers, self.cpus, self.gpus, self.retries = address, workers, cpus, gpus, retries
        self.worker = worker
        self.info: dict | None = None

    def _connect(self):
        try:
            import ray
        except ImportError:
            raise RomerError("the Ray back end needs Ray: pip install 'romer[ray]' (or pip install ray)") from None
        if not ray.is_initialized():
            options = {"logging_level": "ERROR", "log_to_driver": False}
            try:
                if self.address:
                    ray.init(address=self.address, **options)
                else:  # a private local instance, just large enough
                    ray.init(num_cpus=(self.workers or os.cpu_count() or 1) * self.cpus,
                             num_gpus=None if self.gpus else 0, include_dashboard=False, **options)
            except ConnectionError as error:
                raise RomerError(f"cannot reach the Ray cluster at {self.address} ({error}); start one with "
                                 "`ray start --head` and pass its address") from None
        return ray

    def _worker_count(self, ray) -> int:
        if self.workers:
            return self.workers
        resources = ray.cluster_resources()
        fits = int(resources.get("CPU", 1) // self.cpus)
        if self.gpus:
            fits = min(fits, int(resources.get("GPU", 0) // self.gpus))
        if fits < 1:
            raise RomerError(f"the Ray cluster has no room for a worker of {self.cpus} CPUs and {self.gpus} GPUs; "
                             "lower --worker-cpus/--worker-gpus or add nodes")
        return fits

    def run(self, spec: RunSpec, trials: list[Trial]) -> Iterator[dict]:
        if spec.device != "cpu" and not self.gpus:
            raise RomerError(f"--device {spec.device} on Ray needs GPUs reserved per worker: pass --worker-gpus 1")
        if not trials:
            return
        ray = self._connect()
        env = {k: v for k, v in os.environ.items() if k.startswith("ROMER_")}
        actor = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=self.retries + 1,
                           max_task_retries=self.retries, runtime_env={"env_vars": env})(self.worker)
        pool = [actor.remote(spec.model_dump_json(), self.cpus)
                for _ in range(min(self._worker_count(ray), len(trials)))]
        queue = list(trials)
        running: dict = {}

        def submit(worker) -> None:
            if queue:
                trial = queue.pop(0)
                running[worker.run.remote(trial)] = (worker, trial)

        try:
            for worker in pool:
                submit(worker)
            while running:
                [done], _ = ray.wait(list(running), num_returns=1)
                worker, trial = running.pop(done)
                try:
                    records = ray.get(done)
                except ray.exceptions.RayError as error:
                    cause = _cause(error)
                    if "RomerError" in str(error):  # the worker's own one-line error (a bad path on its node, ...)
                        raise RomerError(f"on a Ray worker: {cause}") from None
                    raise RomerError(f"trial {trial.label()} failed on {self.retries + 1} workers ({cause}); "
                                     "finished trials are kept: rerun the same command to resume") from None
                if self.info is None:
                    self.info = ray.get(worker.describe.remote())
                yield from records
                submit(worker)
        finally:
            for worker in pool:
                ray.kill(worker)

    def describe(self) -> dict | None:
        return self.info
