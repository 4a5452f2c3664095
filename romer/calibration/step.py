"""A calibration step: one small registered object that applies one change to a calibrated model.

A step names the `CalibrationConfig` fields it reads (`options`, validated by the config), says when
it runs (`enabled`), what it needs from the clean twin (`clean_needs`: "routing" for the clean model's
router statistics on the fit tokens, "teacher" for its next-token distributions) and whether it needs
held-out calibration tokens; `apply` runs it through the context and returns its undo.

    class MyStep(Step):
        name = "my-step"
        options = ("my_field",)

        def run(self, context):
            ...                       # change the model through context.calibration (every change has an undo)

    register_step(MyStep())
"""

from __future__ import annotations

from typing import Callable

from romer.errors import RomerError


class Step:
    name: str = ""
    options: tuple[str, ...] = ()

    def enabled(self, config, chip) -> bool:
        """Whether the step runs under `config`, on `chip` (None: the clean model, the clean-cost check)."""
        return True

    def clean_needs(self, config, chip) -> frozenset[str]:
        return frozenset()

    def needs_holdout(self, config, chip) -> bool:
        return False

    def run(self, context) -> None:
        raise NotImplementedError

    def apply(self, context) -> Callable[[], None]:
        """Run the step; the returned function undoes exactly what it changed."""
        mark = context.calibration.mark()
        self.run(context)
        return lambda: context.calibration.rollback(mark)


_STEPS: dict[str, Step] = {}


def register_step(step: Step) -> Step:
    if not step.name:
        raise ValueError("a calibration step needs a name")
    _STEPS[step.name] = step
    return step


def get_step(name: str) -> Step:
    if name not in _STEPS:
        import romer.calibration.registered  # noqa: F401  (the built-in steps)
    if name not in _STEPS:
        raise RomerError(f"unknown calibration step '{name}'; steps are {', '.join(_STEPS)}")
    return _STEPS[name]
