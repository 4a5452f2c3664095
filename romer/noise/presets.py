"""Named chips: a registry of NoiseConfig presets, each with where its numbers come from.

Add one with `register_preset(Preset(name, summary, sources, config))` (the registry is the leaf
romer/noise/preset_registry.py; a taken name is refused). Numbers marked
*assumption* are our reasoned choices where no public measurement fits; everything else is
taken from the source named.
"""

from __future__ import annotations

from romer.noise.config import NoiseConfig
from romer.noise.preset_registry import Preset, get_preset, preset_config, preset_names, register_preset

__all__ = ["Preset", "get_preset", "preset_config", "preset_names", "register_preset"]

register_preset(Preset(
    "ideal", "a perfect chip: weights mapped to tiles and read back exactly",
    "—", NoiseConfig(name="ideal")))

register_preset(Preset(
    "gaussian", "programming noise only, one relative σ (sigma_dev, default 0.05 of g_max) on every device",
    "the textbook weight-noise model; set the strength with gaussian:sigma_dev=0.1",
    NoiseConfig(name="gaussian", sigma_dev=0.05)))

_FLASH = dict(
    # assumption: the flash array shares one read reference and ADC range per 256×256 tile, so the largest |w|
    # of a tile maps to g_max (per-column scale factors would need a digital multiplier per column: scaling=column).
    tile_rows=256, tile_cols=256, scaling="tile", g_max_us=25.0,
    # assumption: 1σ cell-to-cell spread after program-and-verify of multi-level flash cells, 5 % of the
    # conductance window at the programming temperature (verified multi-level cells in CIM macros are
    # typically reported at a few % of the window).
    sigma_dev=0.05,
    reference_c=25.0,
    # assumption: subthreshold flash-cell current falls with temperature: −0.2 %/°C on average (−11 % at 80 °C),
    # removed by global drift compensation, with a cell-to-cell spread of 0.1 %/°C (5.5 % at 80 °C).
    temp_shift_per_c=-0.002, temp_spread_per_c=0.001,
    # assumption: off-state leakage of 0.1 % of g_max at 25 °C that doubles every 10 °C, as FET leakage roughly
    # does (×45 at 80 °C, ≈ 4.4 % of g_max), with a lognormal cell-to-cell spread of σ_ln = 0.5.
    leak_ref_us=0.025, leak_doubling_c=10.0, leak_spread=0.5,
    drift_compensation=True,
    # analog mode periphery: 8-bit DAC and ADC, ADC noise 0.2 % of full scale (assumption, ~0.5 LSB at 8 bits).
    dac_bits=8, adc_bits=8, adc_full_scale=8.0, sigma_adc=0.002,
    # the residual periphery errors of a trimmed chip (assumptions, reasoned; romer/noise/periphery.py):
    # - offsets are trimmed once at the test temperature (reference_c) with a 1-LSB trim step, which leaves a
    #   residual uniform on ±½ LSB: std 1/√12 ≈ 0.29 LSB, taken as 0.3 LSB;
    # - after the trim, comparator and sense-amplifier offsets move with heat: input-referred drifts of some
    #   tens of µV/°C along a column's read chain, against an 8-bit LSB of a few mV over a ~1 V column range,
    #   are ~0.01 LSB/°C (0.55 LSB at 80 °C, sqrt(0.3² + 0.55²) ≈ 0.63 LSB in all);
    # - gain mismatch of the column ADCs' references and capacitors after trimming: 0.5 % (1σ);
    # - one ADC per 8 adjacent columns (an 8:1 column multiplexer, common in CIM macros), sharing its errors;
    # - IR drop off: flash cells read at sub-µA currents drop little along 256-cell lines (aihwkit's nominal
    #   strength at 25 µS changes romer-tiny's perplexity by < 0.2 %); sweep `ir_drop` to study it.
    adc_offset_sigma=0.3, adc_offset_per_c=0.01, adc_gain_sigma=0.005, adc_group=8, ir_drop=0.0,
    # retention (acts only when the chip is read some time after programming: drift_time_s, `romer age`):
    # assumption: a verified multi-level cell read in its linear region loses charge logarithmically in time,
    # 0.3 % of its conductance per decade from the verify read at 25 °C (2.2 % a year later), with a cell-to-cell
    # spread of half that loss; heat speeds it with E_a = 1.1 eV, the activation energy JEDEC JESD47 assumes for
    # flash data-retention bakes (×770 in time at 80 °C).
    retention_per_decade=0.003, retention_spread=0.5, retention_t0_s=1.0, retention_ea_ev=1.1,
)

register_preset(Preset(
    "cim-25c", "flash-style CIM at 25 °C: cell-to-cell programming variation on tile-scaled arrays, 8-bit DAC/ADC, "
               "column ADCs trimmed at 25 °C (0.3 LSB offset, 0.5 % gain residuals, 8 columns per ADC)",
    "σ_dev, temperature coefficients, ADC noise and periphery residuals are assumptions (see "
    "romer/noise/presets.py); tile 256×256 and differential pairs follow common CIM macro designs",
    NoiseConfig(name="cim-25c", temperature_c=25.0, **_FLASH)))

register_preset(Preset(
    "cim-80c", "the cim-25c chip read at 80 °C: compensated mean shift, wider cell spread, 45× leakage, "
               "ADC offsets drifted from their 25 °C trim (0.63 LSB in all)",
    "as cim-25c; 80 °C is the paper's hot regime",
    NoiseConfig(name="cim-80c", temperature_c=80.0, **_FLASH)))

register_preset(Preset(
    "pcm", "phase-change memory one hour after programming: programming noise, drift, 1/f read noise",
    "PCM statistics of Nandakumar et al., ICECS 2019, as published in IBM aihwkit's PCMLikeNoiseModel: "
    "programming σ polynomial (0.26348, 1.9650, −1.1731) µS at g_max = 25 µS, level-dependent drift "
    "exponents, t0 = 20 s, 1/f read noise with t_read = 250 ns; global drift compensation",
    NoiseConfig(name="pcm", g_max_us=25.0, prog_coeffs_us=(0.26348, 1.9650, -1.1731), drift_nu="pcm",
                drift_time_s=3600.0, drift_t0_s=20.0, read_1f=True, drift_compensation=True)))

register_preset(Preset(
    "reram", "resistive RAM after write-verify: larger conductance window, relaxation-widened variation",
    "assumption in the range of RRAM CIM chips (e.g. NeuRRAM, Wan et al., Nature 2022, verifies cells in a "
    "window of some tens of µS and reports post-verify relaxation of a few µS): g_max = 40 µS, σ_dev = 6 % "
    "(2.4 µS) constant in conductance",
    NoiseConfig(name="reram", g_max_us=40.0, sigma_dev=0.06,
                # read later (drift_time_s, `romer age`): assumption, relaxation goes on after the first read as a
                # random walk of 1 µS per √decade of time (2 µS one hour on, 2.8 µS a year on: "a few µS", as
                # reported after verify), sped up by heat with E_a = 1.1 eV (assumed, as for flash)
                relax_us_per_decade=1.0, retention_t0_s=1.0, retention_ea_ev=1.1)))

register_preset(Preset(
    "pcm-cim", "the pcm devices (programming noise, drift, 1/f read noise) in the cim chip's arrays and periphery, "
               "read one hour after programming at 25 °C; read later or hotter with `romer age` or Condition",
    "devices: as pcm (Nandakumar et al., ICECS 2019, via IBM aihwkit's PCMLikeNoiseModel); arrays, DAC/ADC and "
    "trimmed periphery: as cim-25c (assumptions, romer/noise/presets.py). Assumption: the cell temperature terms "
    "(compensated mean shift, spread, access-transistor leakage) are cim-25c's, not measured on PCM; PCM's drift "
    "exponents are taken at 25 °C whatever the temperature (no thermal acceleration of drift); flash's charge loss "
    "is off (PCM's drift takes its place)",
    NoiseConfig(name="pcm-cim", temperature_c=25.0, **(_FLASH | dict(
        sigma_dev=0.0, prog_coeffs_us=(0.26348, 1.9650, -1.1731), drift_nu="pcm", drift_time_s=3600.0,
        drift_t0_s=20.0, read_1f=True, retention_per_decade=0.0, retention_spread=0.0)))))

register_preset(Preset(
    "ahwa-injection", "the noise AHWA-LoRA trains its adapters under: additive Gaussian weight noise of 0.067 of each "
                      "column's largest |w|, output noise 0.04, 8-bit DAC and ADC (a training model, not a chip)",
    "Li, Ferro, Lammie et al., arXiv 2411.17367, code github.com/chenlicodebank/lora_on_analog_hardware: IBM aihwkit "
    "TorchInferenceRPUConfig with column-wise weight scaling, weight modifier ADD_NORMAL std 0.067, out_noise 0.04, "
    "8-bit input and output. Here: scaling=column, σ_dev = 0.0564, which gives a weight error of std 0.067 of each "
    "output column's largest |w| (measured: tests/test_ahwa_lora.py; each device of a pair draws it and a conductance stops at zero, so the error is "
    "near Gaussian, KS distance 0.009, where aihwkit adds an exact Gaussian to the weight), output noise 0.04 in units of one full-scale input "
    "on one g_max device (σ_adc = 0.04 / adc_full_scale), analog mode; aihwkit's tiles of 512 × 512 (mapping "
    "max_input_size = max_output_size = 512) and its output bound ±12 (forward.out_bound = 12). Not carried over: "
    "aihwkit's 3σ Gaussian weight clip, applied after each optimiser step; AHWA-LoRA's analog weights are frozen, so "
    "there it clips the pretrained weights once, a change of the model that a romer chip (which holds the model's "
    "weights as given) has no field for. Before issue 44 this preset had romer's 256 × 256 tiles and ±8",
    NoiseConfig(name="ahwa-injection", mode="analog", scaling="column", sigma_dev=0.0564, tile_rows=512,
                tile_cols=512, sigma_adc=0.04 / 12.0, adc_full_scale=12.0, dac_bits=8, adc_bits=8)))
