"""The built-in calibration methods, one file each; importing this package registers them, in the order
`romer methods` lists them. A new method is one more file (here, or in your own package under the
`romer.methods` entry-point group: see `romer/calibration/registry.py`)."""

from romer.calibration.registry import Method, register_method

register_method(Method("none", "no calibration: the noisy model as it is"))

from romer.calibration.methods import (romer, tune, load_bias, offload, retune, compensate, hetero, hpd,  # noqa: E402,F401
                                       retune_agnostic, attention_retune, outliers)
