"""The registry of calibration steps and methods: a leaf that imports nothing of `romer.calibration`.

A step (`step.py`) is one small object that applies one change; a method is a named list of steps with the
defaults it brings. Which steps run, and in what order, is decided by the method and nowhere else.

    register_step(MyStep())
    register_method(Method("mine", "what it does", steps=("router", "my-step"), defaults={"router": "equalize"}))

The built-in methods live in `romer/calibration/methods/`, one file each, which `romer.calibration` imports.
Code outside the package registers through the Python entry-point group `romer.methods`, so that every
process (a Ray worker included) finds it the first time it asks for a method:

    # pyproject.toml of your package
    [project.entry-points."romer.methods"]
    mine = "my_package.my_method"        # a module that calls register_step / register_method when imported

A name registered twice is refused (the second would silently replace the first). A field of
`CalibrationConfig` that the user sets explicitly and that none of the resolved steps reads is refused in one
line, never dropped in silence.
"""

from __future__ import annotations

import sys
import threading
import warnings
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Callable

from romer.errors import RomerError
from romer.registry import Registry

ENTRY_POINT_GROUP = "romer.methods"

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
    on_move: Callable | None = None              # (calibration, chip) after the chip is read at another moment:
                                                 # what the method itself does then on a deployed chip (a read-out
                                                 # re-read); None: the calibration stays as fitted

    def step_objects(self) -> list:
        return [get_step(name) for name in self.steps]

    def ordered_steps(self, config) -> list:
        """The method's steps in the order they run under `config`."""
        steps = self.step_objects()
        return self.arrange(steps, config) if self.arrange is not None else steps

    def fields(self, config=None) -> set[str]:
        """Every CalibrationConfig field this method may read; with `config` (its defaults resolved), only those
        the steps read under it (`Step.reads`)."""
        names = set(COMMON_OPTIONS) | set(self.options) | set(self.defaults)
        for step in self.step_objects():
            names |= set(step.options if config is None else step.reads(config)) | set(own_option_names(step))
        return names


_STEPS: Registry = Registry("calibration step")
_OPTION_OWNERS: dict[str, str] = {}  # an option of a step's own model → that step
_METHODS: Registry[Method] = Registry("calibration method")
_plugins_loaded = False
_plugin_error: str | None = None
_plugins_lock = threading.RLock()


def _origin() -> str:
    """The module that called into this one (who registers)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back
    return frame.f_globals.get("__name__", "?") if frame is not None else "?"


def register_step(step):
    """Add a step; a second step of the same name is refused, and so is an option of its own `option_model` that
    another step's model already declares (one name, one meaning)."""
    if not getattr(step, "name", ""):
        raise RomerError("a calibration step needs a name; set `name = ...` on its class")
    for option in own_option_names(step):
        holder = _OPTION_OWNERS.get(option)
        if holder is not None and holder != step.name:
            raise RomerError(f"calibration option '{option}' of step '{step.name}' is already declared by step "
                             f"'{holder}'; rename it in {type(step).__name__}'s option_model")
    _STEPS.add(step.name, step, _origin())
    for option in own_option_names(step):
        _OPTION_OWNERS[option] = step.name
    return step


def own_option_names(step) -> tuple[str, ...]:
    """The options a step declares in a model of its own (`Step.option_model`), beyond CalibrationConfig's fields."""
    model = getattr(step, "option_model", None)
    return tuple(model.model_fields) if model is not None else ()


def step_option_models() -> dict[str, tuple[str, type]]:
    """Every option declared in a step's own model: option → (step name, model)."""
    load_plugins()
    return {option: (owner, _STEPS.get(owner).option_model) for option, owner in _OPTION_OWNERS.items()
            if owner in _STEPS}


def register_method(method: Method) -> Method:
    """Add a method; its steps must be registered by the time it runs. A second method of the same name, or one
    under a former name, is refused."""
    if method.name in ALIASES:
        raise RomerError(f"'{method.name}' is a former method name; choose another name")
    return _METHODS.add(method.name, method, _origin())


def unregister_method(name: str) -> None:
    """Remove a method (a plugin being reloaded, a test's own method); its steps stay registered."""
    _METHODS.remove(name)


def unregister_step(name: str) -> None:
    _STEPS.remove(name)
    for option in [o for o, owner in _OPTION_OWNERS.items() if owner == name]:
        del _OPTION_OWNERS[option]


def load_plugins() -> None:
    """Import every module of the `romer.methods` entry-point group once per process (each registers its own)."""
    global _plugins_loaded, _plugin_error
    with _plugins_lock:
        if _plugin_error is not None:  # every later call fails the same way: no command runs half-loaded
            raise RomerError(_plugin_error)
        if _plugins_loaded:
            return
        _plugins_loaded = True
        for point in entry_points(group=ENTRY_POINT_GROUP):
            try:
                point.load()
            except RomerError as error:  # e.g. a name already taken: say which plugin asked
                _plugin_error = f"the calibration plugin '{point.name}' ({point.value}): {error}"
            except Exception as error:  # a broken plugin names itself instead of failing somewhere later
                _plugin_error = (f"the calibration plugin '{point.name}' ({point.value}) failed to load: "
                                 f"{type(error).__name__}: {error}; fix or uninstall it")
            if _plugin_error is not None:
                raise RomerError(_plugin_error) from None


def builtin_method_names() -> list[str]:
    """The methods registered so far, without loading plugins (for text built before any command runs)."""
    return _METHODS.names()


def get_step(name: str):
    if name not in _STEPS:
        load_plugins()
    if name not in _STEPS:
        raise RomerError(f"unknown calibration step '{name}'; steps are {', '.join(_STEPS.names())}")
    return _STEPS.get(name)


def _registry() -> Registry[Method]:
    load_plugins()
    return _METHODS


def method_names() -> list[str]:
    """The registered methods, in the order they were registered (the built-ins first)."""
    return _registry().names()


def methods() -> list[Method]:
    return [_METHODS.get(name) for name in _registry().names()]


def origin(name: str) -> str:
    """The module that registered method `name`."""
    return _METHODS.origin(canonical_method(name)) or "?"


def canonical_method(name: str) -> str:
    """`name`, or the current name of a former one (with a deprecation warning, once)."""
    if name in ALIASES:
        if name not in _warned:
            _warned.add(name)
            warnings.warn(f"method '{name}' is now called '{ALIASES[name]}'; the old name will be removed",
                          FutureWarning, stacklevel=3)
        return ALIASES[name]
    if name not in _registry():
        raise RomerError(f"unknown method '{name}'; methods are {', '.join(method_names())} (`romer methods` "
                         "describes each)")
    return name


def get_method(name: str) -> Method:
    return _registry().get(canonical_method(name))


def users_of(option: str) -> list[str]:
    """The methods that read `option`."""
    return [name for name in method_names() if option in _METHODS.get(name).fields()]


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
                         "(or settings) that reads it")


def refuse_unused(explicit, resolved) -> None:
    """A field set explicitly (`explicit`: their names) that the method's steps do not read under the `resolved`
    settings is a one-line error naming it, the method, and the methods that do read it."""
    method = get_method(resolved.method)
    refuse_unread(explicit, method.fields(resolved), f"method '{method.name}' under these settings"
                  if set(explicit) <= method.fields() else f"method '{method.name}'")
