"""The registry of calibration methods. A method says which steps of `calibrate_` run and which
defaults it brings; a field the user sets explicitly wins over a method default.

Add one with `register_method(Method(...))`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from romer.errors import RomerError


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    replace: bool = False          # expert replacement
    router: bool = False           # percentile router calibration
    beyond: bool = False           # our additions: load bias, digital offload, tuning
    retune: bool = False           # per-chip digital re-tuning, always (best may try it as a candidate)
    defaults: dict = field(default_factory=dict)


_METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    _METHODS[method.name] = method
    return method


def method_names() -> list[str]:
    return list(_METHODS)


def get_method(name: str) -> Method:
    if name not in _METHODS:
        raise RomerError(f"unknown calibration method '{name}'; methods are {', '.join(_METHODS)}")
    return _METHODS[name]


register_method(Method("none", "no calibration: the noisy model as it is"))
register_method(Method("er", "expert replacement only: under-activated experts become copies of hot ones",
                       replace=True))
register_method(Method("rc", "router calibration only: percentile (IQR) statistics of the router logits",
                       router=True))
register_method(Method("romer", "ROMER as published: expert replacement, then percentile router calibration",
                       replace=True, router=True))
register_method(Method("retune", "ours: each chip's digital periphery (norm gains, router biases, per-column gain "
                                 "and offset, low-rank adapters within 1 % of the on-chip weights) fitted to the "
                                 "clean twin on calibration tokens", retune=True))
register_method(Method("best", "ours: ROMER's steps tuned on held-out calibration tokens, a load-balancing "
                               "logit bias, and the most noise-sensitive 2 % of on-chip weights in the digital periphery",
                       replace=True, router=True, beyond=True,
                       defaults={"tune": True, "digital_budget": 0.02}))
