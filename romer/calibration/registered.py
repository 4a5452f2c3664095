"""The built-in steps and methods: importing this module registers them (each file registers its own), in the
order `method_names()` lists them."""

from romer.calibration.methods import Method, register_method

register_method(Method("none", "no calibration: the noisy model as it is"))

from romer.calibration import romer, load_bias, offload, tune, retune, compensate, hetero, hpd, retune_agnostic, attention_retune, outliers  # noqa: E402,F401
