"""A calibration step: one small registered object that applies one change to a calibrated model.

A step names the `CalibrationConfig` fields it reads (`options`, validated by the config; `reads` narrows them
to those a given setting uses) and may declare options of its own in a pydantic `option_model` (a plugin's options,
set like any other: `--set`, YAML, `label=method@key=value`; validated by that model, in one line), says when it runs (`enabled`), what it needs from the clean twin
(`clean_needs`: "routing" for the clean model's router statistics on the fit tokens, "teacher" for its
next-token distributions, with "hidden" or "layers" for its decoder layers' outputs as well) and whether it needs held-out calibration tokens; `apply` runs it through the
context and returns its undo.

    class MyStep(Step):
        name = "my-step"
        options = ("my_field",)

        def run(self, context):
            ...                       # change the model through context.calibration (every change has an undo)

    register_step(MyStep())          # romer.calibration.registry
"""

from __future__ import annotations

from typing import Callable

from romer.calibration.registry import get_step, register_step  # noqa: F401  (where a step's author looks)


class Step:
    name: str = ""
    options: tuple[str, ...] = ()  # the CalibrationConfig fields it reads
    option_model = None  # a pydantic model of options of its own (a plugin's), read with `own_options(config)`

    def own_options(self, config):
        """This step's own options under `config` (the model's defaults where the user set none)."""
        return self.option_model(**{k: v for k, v in config.step_options.items() if k in self.option_model.model_fields})

    def enabled(self, config, chip) -> bool:
        """Whether the step runs under `config`, on `chip` (None: the clean model, the clean-cost check)."""
        return True

    def reads(self, config) -> tuple[str, ...]:
        """The fields the step reads under `config` (its defaults resolved): all its options unless a setting
        switches part of it off, in which case a field set for that part is refused."""
        return self.options

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
