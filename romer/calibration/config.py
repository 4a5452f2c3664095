"""`CalibrationConfig`: one validated description of a calibration, for every method; each field belongs
to the steps that read it (`romer/calibration/step.py`), and a method refuses a field set explicitly
that none of its steps reads.

    CalibrationConfig()                                   # ROMER as published, our best-measured reading of it
    CalibrationConfig(method="er", tau=0.25)              # expert replacement only, a lower threshold
    CalibrationConfig(method="tuned", digital_budget=0.01)

`RomerConfig` is the former name, kept as an alias.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from romer.errors import RomerError
from romer.moe.metrics import STARVED_FRACTION_OF_UNIFORM
from romer.validation import OneLineErrors, build, one_line


class CalibrationConfig(OneLineErrors):
    model_config = ConfigDict(extra="forbid", frozen=True)
    _noun: ClassVar[str] = "calibration option"
    _where_listed: ClassVar[str] = "see `romer calibrate --help`"

    method: str = Field("romer", description="calibration method: a registered name (`romer methods` lists and "
                                             "describes each; `best` is tuned's former name)")

    # expert replacement (SPEC §2.1)
    tau: float = Field(STARVED_FRACTION_OF_UNIFORM, gt=0, le=1,
                       description="an expert is under-activated when its share of the noisy model's selections is "
                                   "below tau × the uniform share 1/E (default: the load metrics' starved threshold)")
    max_replaced: float = Field(0.125, ge=0, le=0.5, description="at most this fraction of a layer's experts is replaced")
    pairing: Literal["weights", "clone", "replica"] = Field(
        "replica", description="weights: the cold slot takes a hot expert's weights and keeps its router row; "
                               "clone: weights and router row; replica: weights, and the hot expert's traffic is "
                               "split between the two copies by the digital dispatcher (as DeepSeek's EPLB)")

    order: Literal["er-rc", "rc-er"] = Field(
        "er-rc", description="er-rc: replace, then calibrate the router (as published); rc-er: calibrate the router "
                             "first, then replace only the experts still under-activated")

    # router calibration (SPEC §2.2)
    router: Literal["none", "clamp", "renorm", "equalize", "token"] = Field(
        "renorm", description="reading of the percentile step (romer/calibration/router.py). clamp: logits clamped "
                             "to the fences [Q_low − λ·IQR, Q_high + λ·IQR] of the noisy calibration logits, per "
                             "expert; renorm: each expert's noisy median and IQR mapped onto the clean model's; "
                             "equalize: onto the layer's pooled median and IQR (no clean twin needed); token: per "
                             "token, logits above its Q_high raised and below its Q_low lowered by λ·IQR")
    q_low: float = Field(25.0, gt=0, lt=50, description="lower percentile (the paper's Q1)")
    q_high: float = Field(75.0, gt=50, lt=100, description="upper percentile (the paper's Q3)")
    lam: float = Field(1.5, ge=0, le=10, description="λ, fence distance in IQRs")

    # beyond the paper
    load_bias: bool = Field(False, description="per-expert logit bias that drives each expert's noisy load back to "
                                               "its clean load (DeepSeek-V3's auxiliary-loss-free balancing)")
    bias_steps: int = Field(4, ge=1, le=50, description="bias updates, one calibration pass each")
    bias_rate: float = Field(1.0, gt=0, le=4, description="step size of the bias update on log(load ratio)")
    digital_budget: float = Field(0.0, ge=0, le=1, description="share of the chip's weights that may be held in "
                                                               "digital units (moved tensors, HPD's factors), "
                                                               "counting what the method already added")
    digital_attention: bool = Field(True, description="hetero: the attention projections run in digital units as "
                                                      "well, as the paper places them")
    digital_experts: float = Field(0.125, ge=0, le=1, description="hetero: fraction of each MoE layer's experts that "
                                                                  "run in digital units (the paper: 0.125 to 0.25)")
    digital_routers: bool = Field(False, description="hetero: the routers run in digital units as well (the paper moves "
                                                     "densely activated modules to digital units; a router is one)")
    hpd_reading: Literal["last", "every", "ranked", "last-down"] = Field(
        "last", description="hpd: which projections are decomposed. last (as published: the paper decomposes \"the "
                            "last output projection layer\"): the last decoder layer's attention output projection; "
                            "every: each layer's attention output projection, from the last layer back, while their "
                            "digital factors fit digital_budget; ranked (ours): any matrix but a router, by measured "
                            "sensitivity, within digital_budget; last-down: the last MoE layer's expert down "
                            "projections, each slot decomposed (the block's last write to the residual stream)")
    hpd_whole: bool = Field(False, description="hpd's control: the same matrices moved whole to digital units instead "
                                               "of decomposed")
    outlier_fraction: float = Field(0.0025, ge=0, lt=0.5, description="outliers: share of the weights of each scale "
                                    "segment (a tile, or a column within a tile) held in digital units, largest |w| "
                                    "first; each costs two digital numbers (its value and its position)")
    outlier_attention: float | None = Field(1.0, ge=1, le=1000, description="outliers: attention's fraction over "
                                            "every other tensor's, at the same number of outliers in all (1: the "
                                            "same fraction everywhere; None: chosen among OUTLIER_ATTENTION_GRID on "
                                            "held-out calibration perplexity)")
    tune: bool = Field(False, description="choose pairing, τ, router calibration and load bias on held-out "
                                          "calibration tokens")

    # per-chip digital re-tuning against the clean twin (romer/calibration/retune.py)
    retune: bool = Field(False, description="tuned: add retune's fit as a last candidate, kept only if held-out "
                                            "perplexity improves (method retune always fits)")
    retune_budget: float = Field(0.01, ge=0, le=0.2, description="digital parameters the re-tuning may add or re-set "
                                                                 "(norm gains and router biases included), as a "
                                                                 "share of the chip's weights")
    retune_rank: int = Field(8, ge=0, le=256, description="largest rank of a low-rank digital adapter (0: none)")
    retune_norms: bool = Field(True, description="re-tune the norm gains (existing digital parameters)")
    retune_columns: bool = Field(True, description="per-column digital gain and offset after the ADCs")
    retune_router_bias: bool = Field(True, description="per-expert router-logit bias")
    retune_engine: Literal["end_to_end", "blockwise"] = Field(
        "end_to_end", description="how the corrections are fitted: end to end (every step a forward and backward pass "
                                  "through the whole chip, KL of the next-token distributions), or block by block "
                                  "(each decoder layer against the clean twin's hidden state on the chip's own "
                                  "inputs, one block in memory: faster, and what reaches large models)")
    retune_block_steps: int = Field(50, ge=0, le=100000, description="blockwise: Adam steps per block, one "
                                                                      "calibration batch each")
    retune_block_lr: float = Field(5e-3, gt=0, le=1, description="blockwise: Adam learning rate of the block fits")
    retune_polish_steps: int = Field(0, ge=0, le=100000, description="blockwise: end-to-end steps after the blocks "
                                                                      "(the KL and hidden-state loss of end_to_end)")
    retune_steps: int = Field(200, ge=1, le=100000, description="end_to_end: Adam steps, one calibration batch each")
    retune_lr: float = Field(2e-3, gt=0, le=1, description="end_to_end (and the polish): Adam learning rate")
    retune_start: Literal["least_squares", "zero", "installed"] = Field(
        "least_squares", description="where the fit starts: each linear layer's column gains, offsets and adapter set "
                                     "by least squares against the clean weights on the chip's own inputs, zero, or "
                                     "the corrections an earlier step installed (retune-from-agnostic), zero where "
                                     "there is none of the same shape")
    retune_hidden_weight: float = Field(1.0, ge=0, le=100, description="weight of the hidden-state term of the fit's "
                                        "loss (each decoder layer's output against the clean twin's, relative MSE)")
    retune_over_chips: int = Field(4, ge=2, le=64, description="retune-agnostic: chip draws the one set of digital "
                                                               "corrections is fitted over (never the chips it is "
                                                               "evaluated on)")
    retune_eval_every: int = Field(25, ge=1, description="steps between held-out checks (the best step is kept)")
    retune_plan_tokens: int | None = Field(None, ge=1, description="held-out tokens (the first whole windows) the "
                                           "planner's sensitivity pass reads, one pass per on-chip matrix; None: all "
                                           "of them. Fewer plan faster and place the adapters on a noisier ranking")
    retune_plan: Literal["model", "blockwise"] = Field(
        "model", description="how the planner ranks the on-chip matrices for adapters: model (each matrix alone made "
                             "digital, held-out perplexity of the whole chip: one pass of the model per matrix) or "
                             "blockwise (each matrix alone made digital, the relative error of its own decoder "
                             "layer's output against the clean twin's, on that layer's cached held-out inputs: one "
                             "pass of one layer per matrix, the model about (matrices per layer + 1) times in all)")
    retune_checkpointing: Literal["auto", "on", "off"] = Field(
        "auto", description="gradient checkpointing per decoder layer during the fit (auto: on an accelerator), "
                            "for models whose activations would not fit (romer estimate shows both)")

    # AHWA-LoRA (romer/calibration/methods/ahwa_lora.py): the authors' settings by default
    lora_rank: int = Field(8, ge=1, le=256, description="ahwa-lora: LoRA rank r on every on-chip linear layer (the "
                                                        "authors: 8)")
    lora_alpha: float = Field(32.0, gt=0, le=4096, description="ahwa-lora: LoRA α; the adapter's output is scaled by "
                                                               "α / r (the authors: 32)")
    lora_dropout: float = Field(0.1, ge=0, lt=1, description="ahwa-lora: dropout on the adapter's input while "
                                                             "training (the authors: 0.1)")
    lora_lr: float = Field(2e-4, gt=0, le=1, description="ahwa-lora: Adam's learning rate (the authors: 2e-4)")
    lora_weight_decay: float = Field(0.0, ge=0, le=1, description="ahwa-lora: Adam's weight decay (the authors: 0; "
                                                                  "their AnalogAdam is built without the "
                                                                  "--weight_decay 1e-4 their script passes)")
    lora_schedule: Literal["authors", "early-stop"] = Field(
        "authors", description="ahwa-lora: authors (as published: lora_epochs fixed epochs, the rate decaying "
                               "linearly to 0, gradients clipped to norm lora_clip, the final weights kept) or "
                               "early-stop (ours: a constant rate, stop after lora_patience held-out checks without "
                               "gain, the best check kept)")
    lora_epochs: float = Field(15.0, gt=0, le=10_000, description="ahwa-lora, authors' schedule: passes over the "
                                                                   "training text (the authors: 15)")
    lora_clip: float = Field(1.0, ge=0, le=1000, description="ahwa-lora: gradient norm clip (the authors: 1.0, the "
                                                             "Hugging Face Trainer's default; 0: none)")
    lora_max_steps: int = Field(3000, ge=1, le=1_000_000, description="ahwa-lora: most training steps (early-stop "
                                                                     "stops earlier once the held-out loss has not "
                                                                     "improved for lora_patience checks; the "
                                                                     "authors' schedule refuses a cap below its "
                                                                     "epochs)")
    lora_eval_every: int = Field(25, ge=1, description="ahwa-lora: steps between held-out checks (early-stop keeps "
                                                       "the best; the authors' schedule only records them)")
    lora_patience: int = Field(4, ge=1, le=1000, description="ahwa-lora, early-stop: held-out checks without "
                                                              "improvement before training stops")
    lora_check_chips: int = Field(2, ge=1, le=64, description="ahwa-lora: fixed chip draws the held-out loss is "
                                                              "averaged over (never trained on, never evaluated on)")
    lora_train_data: str = Field("", description="ahwa-lora: the text it trains on, once for every chip: a corpus "
                                                  "name with its split (stdlib:train), a .txt/.jsonl file, or model "
                                                  "(the text the model's folder says it was trained on: "
                                                  "stdlib:train for romer-tiny); empty: the calibration fit tokens. Never the evaluation text; held-out checks read the "
                                                  "calibration hold-out")
    lora_train_noise: str = Field("chip", description="ahwa-lora: the noise trained under, a fresh draw every step: "
                                                       "chip (the chip's own configuration), or a preset spec such as "
                                                       "ahwa-injection (the authors' injected noise) or cim-80c")
    lora_loss: Literal["task", "distill"] = Field(
        "task", description="ahwa-lora: task (as published: the next-token cross-entropy of the calibration text) "
                            "or distill (ours: KL to the clean twin's next-token distributions)")
    lora_chip_steps: int = Field(50, ge=1, le=100000, description="ahwa-lora-retune: per-chip steps of retune's "
                                                                   "end-to-end fit, from the deployed adapters")
    lora_cache: str = Field("", description="ahwa-lora: folder of trained adapters, one file per (model, training "
                                            "noise, options, tokens); empty: $ROMER_CACHE/ahwa-lora or "
                                            "~/.cache/romer/ahwa-lora; off: no disk cache")

    # calibration data
    calib_tokens: int = Field(32768, ge=64, description="calibration tokens used (the start of the calibration split)")
    holdout: float = Field(0.25, ge=0, lt=1, description="share of the calibration tokens held out to score choices "
                                                         "(tuning and digital offload)")
    window: Optional[int] = Field(None, ge=2, description="tokens per calibration sequence; default: the model's "
                                                          "context, at most 2048")
    batch_size: int = Field(8, ge=1, description="sequences per forward pass")

    # options that steps declare in models of their own (Step.option_model): a plugin brings its options there
    step_options: dict[str, Any] = Field(default_factory=dict, description="options declared by steps' own models, "
                                         "option → value; an option that is not a field above is put here for you")

    @field_validator("method")
    @classmethod
    def _known_method(cls, method: str) -> str:
        from romer.calibration.registry import canonical_method

        try:
            return canonical_method(method)
        except RomerError as error:
            raise ValueError(str(error)) from None

    @model_validator(mode="before")
    @classmethod
    def _gather_step_options(cls, data):
        """An option that is not a field of this config but is declared by a step's own model goes to step_options
        (so `--set`, YAML and `label=method@key=value` name it like any other), validated by that model: a bad value
        is one line naming the step and the option."""
        if not isinstance(data, dict):
            return data
        from romer.calibration.registry import step_option_models

        declared = step_option_models()
        loose = [key for key in data if key not in cls.model_fields and key in declared]
        if not loose and not data.get("step_options"):
            return data
        data = dict(data)
        options = dict(data.get("step_options") or {}) | {key: data.pop(key) for key in loose}
        for key in options:
            if key not in declared:
                raise ValueError(f"unknown calibration option '{key}'; no calibration step declares it")
        checked = {}
        for step, model in {declared[key] for key in options}:
            mine = {key: value for key, value in options.items() if declared[key][0] == step}
            try:
                values = model(**mine).model_dump()
            except ValidationError as error:
                raise ValueError(one_line(error, f"step '{step}' option", f"see step '{step}'")) from None
            checked |= {key: values[key] for key in mine}
        data["step_options"] = checked
        return data

    def option(self, name: str):
        """The value of `name`: a field of this config, or an option of a step's own model (its default if unset)."""
        if name in type(self).model_fields:
            return getattr(self, name)
        if name in self.step_options:
            return self.step_options[name]
        from romer.calibration.registry import step_option_models

        declared = step_option_models().get(name)
        if declared is None:
            raise RomerError(f"unknown calibration option '{name}'; no field or step declares it")
        return declared[1].model_fields[name].get_default(call_default_factory=True)

    @model_validator(mode="after")
    def _percentiles_ordered(self) -> "CalibrationConfig":
        if self.q_low >= self.q_high:
            raise ValueError("q_low must be below q_high")
        return self

    def explicit(self) -> dict:
        """The fields the user set (method excluded), with their values; a step's own options count as fields."""
        return {name: getattr(self, name) for name in self.model_fields_set
                if name not in ("method", "step_options")} | dict(self.step_options)


RomerConfig = CalibrationConfig  # the former name


def calibration_config(**fields) -> CalibrationConfig:
    """A CalibrationConfig, or a one-line RomerError naming the first bad field."""
    return build(CalibrationConfig, fields, "calibration option", "see `romer calibrate --help`")


romer_config = calibration_config  # the former name
