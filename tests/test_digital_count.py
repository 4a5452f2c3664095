"""One count, one denominator: every digital number a method adds or re-sets is in `Calibration.digital_share()`,
over the chip's weights, for every built-in method, checked against a count by hand from the model's shape
(tests/families.py's OLMoE: 3 layers, 8 experts of 32 → 16 → 32, hidden 32) and the choices the method records."""

from __future__ import annotations

import pytest
import torch

from romer import CalibrationConfig, NoiseConfig, apply_noise_, calibrate_
from romer.calibration import method_names
from tests.families import build

LAYERS, EXPERTS, HIDDEN, FFN = 3, 8, 32, 16
ATTENTION = 4 * HIDDEN * HIDDEN                 # q, k, v, o
ROUTER = EXPERTS * HIDDEN
GATE_UP, DOWN = 2 * FFN * HIDDEN, HIDDEN * FFN  # one expert slot
CHIP = LAYERS * (ATTENTION + ROUTER + EXPERTS * (GATE_UP + DOWN))
NORMS = LAYERS * 4 * HIDDEN + HIDDEN            # input, post-attention, q and k norms per layer; the final norm
BIASES = LAYERS * EXPERTS                       # one router bias per expert
RENORM = 4 * LAYERS * EXPERTS                   # noisy and clean median and IQR per expert
NOISE = NoiseConfig.preset("cim-80c")
FIT = dict(calib_tokens=64 * 12, window=64, retune_steps=4, retune_eval_every=2, batch_size=4)
RETUNE = FIT | {"retune_budget": 0.05}


LORA = dict(calib_tokens=64 * 12, window=64, lora_epochs=1, lora_max_steps=2, lora_eval_every=1, lora_check_chips=1,
            lora_cache="off")
# a per-column scale and A (8 × in), B (out × 8) on every on-chip matrix, per expert slot
LORA_COUNT = LAYERS * (4 * (HIDDEN + 8 * 2 * HIDDEN) + (EXPERTS + 8 * (EXPERTS + HIDDEN))
                       + EXPERTS * ((2 * FFN + 8 * (2 * FFN + HIDDEN)) + (HIDDEN + 8 * (HIDDEN + FFN))))


def ids(tokens: int = 64 * 12) -> torch.Tensor:
    return torch.randint(1, 128, (tokens,), generator=torch.Generator().manual_seed(3))


def retune_count(report: dict, chip) -> int:
    """What retune's recorded choices add: norm gains, router biases, two numbers per column, r·(out + in) per
    adapter (a fused tensor: per expert slot)."""
    count = NORMS * (report["norm_gains"] > 0) + BIASES * report["router_bias"]
    for name in report["columns"]:
        shape = chip.shape(name)
        count += 2 * shape[-2] * (shape[0] if len(shape) == 3 else 1)
    for name, rank in report["ranks"].items():
        shape = chip.shape(name)
        count += rank * (shape[-2] + shape[-1]) * (shape[0] if len(shape) == 3 else 1)
    return count


def replicas(calibration) -> int:
    return 2 * len(calibration.replacements)  # the dispatcher stores each (hot, copy) pair


CASES = {
    "none": (CalibrationConfig(method="none"), lambda c, chip: 0),
    "er": (CalibrationConfig(method="er", tau=1.0), lambda c, chip: replicas(c)),
    "rc": (CalibrationConfig(method="rc"), lambda c, chip: RENORM),
    "rc-clamp": (CalibrationConfig(method="rc", router="clamp"), lambda c, chip: 2 * LAYERS * EXPERTS),
    "romer": (CalibrationConfig(method="romer", tau=1.0), lambda c, chip: RENORM + replicas(c)),
    "compensate": (CalibrationConfig(method="compensate"),
                   lambda c, chip: LAYERS * (4 * HIDDEN + EXPERTS + EXPERTS * 2 * FFN + EXPERTS * HIDDEN)),
    "compensate-global": (CalibrationConfig(method="compensate-global"),
                          lambda c, chip: LAYERS * (4 + 1 + EXPERTS + EXPERTS)),
    "hetero": (CalibrationConfig(method="hetero"), lambda c, chip: LAYERS * (ATTENTION + ROUTER + GATE_UP + DOWN)),
    "hetero-analog-routers": (CalibrationConfig(method="hetero", digital_routers=False),
                              lambda c, chip: LAYERS * (ATTENTION + GATE_UP + DOWN)),
    "hetero-measured": (CalibrationConfig(method="hetero-measured", calib_tokens=64 * 8, window=64),
                        lambda c, chip: LAYERS * (ATTENTION + ROUTER + GATE_UP + DOWN)),
    "hpd": (CalibrationConfig(method="hpd"), lambda c, chip: HIDDEN * HIDDEN),
    "hpd-control": (CalibrationConfig(method="hpd", hpd_whole=True), lambda c, chip: HIDDEN * HIDDEN),
    "outliers": (CalibrationConfig(method="outliers", outlier_fraction=0.25), lambda c, chip: 2 * CHIP // 4),
    "tuned": (CalibrationConfig(method="tuned", digital_budget=0.0, calib_tokens=64 * 8, window=64),
              lambda c, chip: sum(t.stored_parameters for t in c.transforms.values())),
    "retune": (CalibrationConfig(method="retune", **RETUNE), lambda c, chip: retune_count(c.report["retune"], chip)),
    "attention-retune": (CalibrationConfig(method="attention-retune", **RETUNE),
                         lambda c, chip: LAYERS * ATTENTION + retune_count(c.report["retune"], chip)),
    # attention at twice the others' fraction: 0.1558 of every weight gives the others just over 1/8 and attention
    # just over 1/4 of each scale segment, so the floors are whole eighths and quarters
    "outlier-retune": (CalibrationConfig(method="outlier-retune", outlier_fraction=0.1558, outlier_attention=2.0,
                                         **RETUNE),
                       lambda c, chip: 2 * (LAYERS * ATTENTION // 4 + (CHIP - LAYERS * ATTENTION) // 8)
                       + retune_count(c.report["retune"], chip)),
    "retune-agnostic": (CalibrationConfig(method="retune-agnostic", retune_over_chips=2, **RETUNE),
                        lambda c, chip: retune_count(c.report["retune-agnostic"], chip)),
    "retune-from-agnostic": (CalibrationConfig(method="retune-from-agnostic", retune_over_chips=2, **RETUNE),
                             lambda c, chip: retune_count(c.report["retune"], chip)),
    "ahwa-lora": (CalibrationConfig(method="ahwa-lora", **LORA), lambda c, chip: LORA_COUNT),
    "ahwa-lora-retune": (CalibrationConfig(method="ahwa-lora-retune", lora_chip_steps=2, retune_eval_every=1, **LORA),
                         lambda c, chip: LORA_COUNT),
}


def test_every_built_in_method_has_a_hand_count():
    assert set(method_names()) <= set(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_digital_share_is_the_hand_count_over_the_chips_weights(case):
    config, by_hand = CASES[case]
    model = build("olmoe")
    with apply_noise_(model, NOISE, seed=0) as chip:
        assert chip.total_parameters == CHIP
        calibration = calibrate_(model, config, ids())
        expected = by_hand(calibration, chip)
        if case == "tuned":  # its choices: the hand count is the per-expert numbers of what the tuner kept
            kept = calibration.config
            expected = (RENORM if kept.router in ("renorm", "equalize") else 2 * LAYERS * EXPERTS
                        if kept.router == "clamp" else 0) + replicas(calibration) + BIASES * kept.load_bias
        assert calibration.digital_weights() == expected, case
        assert calibration.digital_share() == expected / CHIP
        if case.startswith(("retune", "attention-retune", "outlier-retune")):
            report = calibration.report.get("retune") or calibration.report["retune-agnostic"]
            assert report["parameters_added"] <= report["budget_parameters"] == int(0.05 * CHIP)
        calibration.remove()
