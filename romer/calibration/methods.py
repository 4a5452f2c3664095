"""The registry of calibration methods. A method is a named list of steps (`step.py`) with the defaults it
brings; which steps run, and in what order, is decided here and nowhere else.

    register_method(Method("mine", "what it does", steps=("router", "my-step"), defaults={"router": "equalize"}))

A field of `CalibrationConfig` that the user sets explicitly and that none of the method's steps reads is
refused in one line (never dropped in silence); the defaults a method brings are written into the
calibration's record.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

from romer.errors import RomerError

# fields every method reads: which calibration tokens, how they are cut, how many run at once
COMMON_OPTIONS = ("calib_tokens", "holdout", "window", "batch_size")

# former names, still accepted for a deprecation period (a warning, once per name)
ALIASES = {"best": "tuned"}
_warned: set[str] = set()


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    steps: tuple[str, ...] = ()                 # registered step names, in the order they run
    defaults: dict = field(default_factory=dict)  # field values the method brings where the user set none
    options: tuple[str, ...] = ()                # fields the method itself reads (beyond its steps')
    arrange: Callable | None = None              # (steps, config) → the steps in the order this config asks

    def step_objects(self) -> list:
        from romer.calibration.step import get_step

        return [get_step(name) for name in self.steps]

    def ordered_steps(self, config) -> list:
        """The method's steps in the order they run under `config`."""
        steps = self.step_objects()
        return self.arrange(steps, config) if self.arrange is not None else steps

    def fields(self) -> set[str]:
        """Every CalibrationConfig field this method reads."""
        names = set(COMMON_OPTIONS) | set(self.options) | set(self.defaults)
        for step in self.step_objects():
            names |= set(step.options)
        return names


_METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add (or replace) a method; the steps it names must be registered by the time it runs."""
    if method.name in ALIASES:
        raise RomerError(f"'{method.name}' is a former method name; choose another name")
    _METHODS[method.name] = method
    return method


def _registry() -> dict[str, Method]:
    import romer.calibration.registered  # noqa: F401  (importing the built-in methods registers them)

    return _METHODS


# how lists show the built-in methods, whatever order their modules were imported in
BUILT_IN_ORDER = ("none", "er", "rc", "romer", "tuned", "retune", "compensate", "compensate-global", "hetero",
                 "hetero-measured", "hpd", "retune-agnostic",
                 "attention-retune")


def method_names() -> list[str]:
    """The built-in methods in their usual order, then the others in the order they were registered."""
    names = list(_registry())
    return [n for n in BUILT_IN_ORDER if n in names] + [n for n in names if n not in BUILT_IN_ORDER]


def canonical_method(name: str) -> str:
    """`name`, or the current name of a former one (with a deprecation warning, once)."""
    if name in ALIASES:
        if name not in _warned:
            _warned.add(name)
            warnings.warn(f"method '{name}' is now called '{ALIASES[name]}'; the old name will be removed",
                          FutureWarning, stacklevel=3)
        return ALIASES[name]
    if name not in _registry():
        raise RomerError(f"unknown method '{name}'; methods are {', '.join(method_names())}")
    return name


def get_method(name: str) -> Method:
    return _registry()[canonical_method(name)]


def users_of(option: str) -> list[str]:
    """The methods that read `option`."""
    return [name for name in method_names() if option in _METHODS[name].fields()]


def former_names(method: str) -> list[str]:
    """The names `method` had before (ALIASES read backwards)."""
    return [old for old, new in ALIASES.items() if new == method]


def refuse_unread(options, reads: set[str], by: str) -> None:
    """The first of `options` outside `reads` is a one-line error naming it, who does not read it (`by`), and the
    methods that do."""
    for option in sorted(set(options) - reads):
        readers = users_of(option)
        where = f"; it is read by {', '.join(readers)}" if readers else ""
        raise RomerError(f"calibration option '{option}' is not used by {by}{where}: drop it, or choose a method "
                         "that reads it")


def refuse_unused(config) -> None:
    """A field set explicitly that the method does not read is a one-line error naming it, the method, and the
    methods that do read it."""
    method = get_method(config.method)
    refuse_unread(config.explicit(), method.fields(), f"method '{method.name}'")


def with_defaults(config):
    """`config` with the method's defaults for the fields the user left unset, and the record of what they set."""
    from romer.calibration.config import calibration_config

    method = get_method(config.method)
    brought = {k: v for k, v in method.defaults.items() if k not in config.model_fields_set}
    fields = config.model_dump() | brought
    return calibration_config(**fields), brought
