"""Zero-shot tasks through lm-evaluation-harness, on the model as it sits in memory (noisy and
calibrated weights included), with lm-eval's task registry plus the tasks romer ships offline.

Shipped: `romer_pycloze` (complete a line of Python, 4 choices, from the stdlib test split).
The paper's tasks (lambada_openai, piqa, arc_easy, arc_challenge) come from lm-eval's registry
and download their data from the Hugging Face Hub on first use.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from torch import nn

from romer.errors import RomerError

SHIPPED = Path(__file__).parent / "tasks"


@lru_cache(maxsize=1)
def _include_dir() -> str:
    """The shipped task YAMLs with their data path filled in (lm-eval reads data_files relative to the cwd)."""
    folder = Path(tempfile.mkdtemp(prefix="romer-tasks-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # a temporary folder, not the user's: gone at exit
    for path in SHIPPED.glob("*.yaml"):
        (folder / path.name).write_text(path.read_text().replace("ROMER_TASK_DIR", str(SHIPPED)))
    return str(folder)


@lru_cache(maxsize=1)
def task_manager():
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise RomerError("zero-shot tasks need lm-evaluation-harness: pip install 'romer[eval]'") from None
    return TaskManager(include_path=_include_dir())


def check_tasks(tasks: list[str]) -> None:
    """Fail early, in one line, on a task name that neither lm-eval nor romer knows."""
    known = set(task_manager().all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise RomerError(f"unknown task '{unknown[0]}'; use an lm-eval task name (lm_eval --tasks list) "
                         "or a shipped one: romer_pycloze")


def run_tasks(model: nn.Module, tokenizer, tasks: list[str], batch_size: int = 8, limit: int | None = None) -> dict:
    """{task: {metric: value}} for the in-memory model; `limit` caps the documents per task."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    check_tasks(tasks)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    results = simple_evaluate(model=lm, tasks=tasks, task_manager=task_manager(), limit=limit,
                              bootstrap_iters=0, log_samples=False, verbosity="ERROR")
    scores = {}
    for task, metrics in results["results"].items():
        scores[task] = {key.split(",")[0]: float(value) for key, value in metrics.items()
                        if isinstance(value, (int, float)) and not key.startswith("alias") and "stderr" not in key}
    return scores
