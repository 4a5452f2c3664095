"""The built-in calibration methods, one file each; importing this package registers them. A new method is one more
file here: every module of this package is imported, the ones below first, in the order `romer methods` lists them,
then any other in name order. Outside romer, a method is a file of your own package named under the `romer.methods`
entry-point group (see `romer/calibration/registry.py`)."""

import importlib
import pkgutil

from romer.calibration.registry import Method, register_method

register_method(Method("none", "no calibration: the noisy model as it is"))

LISTED_FIRST = ("romer", "tune", "load_bias", "offload", "retune", "compensate", "hetero", "hpd", "retune_agnostic", "ahwa_lora",
                "attention_retune", "outliers")

for _module in (*LISTED_FIRST, *sorted({m.name for m in pkgutil.iter_modules(__path__)} - set(LISTED_FIRST))):
    importlib.import_module(f"{__name__}.{_module}")
