"""An example calibration method in one file: `router-temperature`, every router's logits divided by the
temperature that brings the noisy routing's mean top-1 probability back to the clean twin's, per layer.

It touches no other file. Inside romer it sits in `romer/calibration/methods/`, whose package imports every module
in it; outside, your package names it under the `romer.methods` entry-point group:

    [project.entry-points."romer.methods"]
    router-temperature = "router_temperature"

and `romer methods`, `romer calibrate --method router-temperature` and every Ray worker find it. Its step brings
options of its own (`RouterTemperatureOptions`), set like any other (`--set bisection_steps=20`, YAML, or a labelled
variant `rt20=router-temperature@bisection_steps=20`) and checked in one line by its model, without touching
`CalibrationConfig`. `tests/test_registry.py` installs this file both ways and runs it.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from romer.calibration.registry import Method, register_method, register_step
from romer.calibration.step import Step


def mean_top1(logits: torch.Tensor, temperature: float) -> float:
    return torch.softmax(logits.float() / temperature, dim=-1).max(dim=-1).values.mean().item()


class RouterTemperatureOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    log_t_bound: float = Field(3.0, gt=0, le=10, description="the search runs over log T in [-bound, bound]")
    bisection_steps: int = Field(40, ge=4, le=200, description="halvings of that interval")


class RouterTemperature(Step):
    """Per layer, the temperature (bisection on log T) at which the noisy logits' mean top-1 probability equals
    the clean twin's; the logits are then scaled by 1/T through the layer's routing transform."""

    name = "router-temperature"
    options = ()
    option_model = RouterTemperatureOptions

    def clean_needs(self, config, chip) -> frozenset[str]:
        return frozenset({"routing"})

    def run(self, context) -> None:
        from romer.calibration.statistics import routing_stats

        options = self.own_options(context.config)
        noisy = routing_stats(context.model, context.tokens.fit, context.batch_size, logits=True)
        clean = context.clean_routing()
        temperatures = []
        for layer, logits in enumerate(noisy.logits):
            target = mean_top1(clean.logits[layer], 1.0)
            low, high = -options.log_t_bound, options.log_t_bound  # log T
            for _ in range(options.bisection_steps):
                middle = (low + high) / 2
                low, high = (middle, high) if mean_top1(logits, float(torch.tensor(middle).exp())) > target \
                    else (low, middle)
            temperature = float(torch.tensor((low + high) / 2).exp())
            transform = context.calibration.transform(layer)  # z → (z − 0) / T · 1 + 0, undone with the calibration
            experts = logits.shape[-1]
            transform.noisy_median, transform.target_median = torch.zeros(experts), torch.zeros(experts)
            transform.noisy_iqr, transform.target_iqr = torch.full((experts,), temperature), torch.ones(experts)
            temperatures.append(temperature)
        context.calibration.report["router_temperature"] = temperatures


register_step(RouterTemperature())
register_method(Method("router-temperature", "example plugin: each router's logits scaled so that the noisy "
                                             "model's mean top-1 probability matches the clean twin's",
                       steps=("router-temperature",)))
