"""`retune` block by block: each decoder layer's digital corrections fitted on its own, in model order.

The scheme large-model calibration uses (GPTQ layer by layer, BRECQ and OmniQuant block by block),
applied to a chip's digital periphery:

1. the first decoder layer's inputs are taken once, on the calibration tokens (embeddings are digital);
2. for each decoder layer l, in order:
   - its corrections start from least squares on the inputs its linear layers see (`retune_start.py`);
   - Adam then minimises the relative squared error of the layer's output against the clean twin's
     hidden state after layer l, on the chip's own inputs (the output of layers 0..l−1 as corrected
     so far), so each layer also repairs what reaches it from the layers before;
   - the held-out error picks the best step; the layer is then run once over every cached input,
     which gives layer l+1 its inputs;
3. the output head (final norm and output layer) is fitted the same way against the clean twin's
   next-token distributions (KL), on the last layer's corrected outputs.

Every step runs one block on one batch: the backward pass never holds more than one block's
activations, and what the fit keeps besides the model is one layer's inputs (float32 on the host)
and the clean twin's layer outputs (float16 on the host), never the whole model's activations.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn

from romer.calibration.blocks import BlockInputs, compute_dtype, decoder_layers, final_norm, first_layer_inputs
from romer.calibration.retune_start import least_squares_fit, linear_layers
from romer.calibration.teacher import Teacher
from romer.noise.chip import ChipHandle
from romer.resident import trim_heap


def relative_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of ‖output − target‖² over the mean of ‖target‖² (scale-free across layers)."""
    target = target.to(output.device, torch.float32)
    return (output - target).pow(2).sum(-1).mean() / target.pow(2).sum(-1).mean()


def fit_blockwise(model: nn.Module, chip: ChipHandle, trainable: dict[str, list[nn.Parameter]], tokens,
                  teacher: Teacher, config) -> dict:
    """Fit `trainable` (module path → its digital parameters; each path inside one decoder layer, or outside all of
    them for the output head) block by block; the record of each block's fit."""
    device = next(model.parameters()).device
    batch = config.batch_size
    fit_inputs = first_layer_inputs(model, tokens.fit, batch)
    held_inputs = first_layer_inputs(model, tokens.holdout, batch)
    linears = linear_layers(chip)
    owned: set[str] = set()
    blocks = []
    for index, (name, layer) in enumerate(decoder_layers(model)):
        inside = lambda path, name=name: path.startswith(name + ".")  # noqa: E731
        params = [p for path, ps in trainable.items() if inside(path) for p in ps]
        owned |= {path for path in trainable if inside(path)}
        started = time.perf_counter()
        if config.retune_start == "least_squares":
            least_squares_fit(chip, {n: m for n, m in linears.items() if inside(n)},
                              lambda: [fit_inputs.run(layer, i, device) for i in range(len(fit_inputs))])
        record = adam_fit(params, config.retune_block_steps, config.retune_block_lr, config.retune_eval_every,
                          batches=len(fit_inputs),
                          fit_loss=lambda i: relative_error(fit_inputs.run(layer, i, device),
                                                            teacher.fit_layers[index][i]),
                          held_loss=lambda i: relative_error(held_inputs.run(layer, i, device),
                                                             teacher.holdout_layers[index][i]),
                          held_batches=len(held_inputs))
        fit_inputs, held_inputs = fit_inputs.through(layer, device), held_inputs.through(layer, device)
        trim_heap()
        blocks.append({"block": name, "parameters": sum(p.numel() for p in params),
                       "seconds": time.perf_counter() - started, **record})
    head = [p for path, ps in trainable.items() if path not in owned for p in ps]
    blocks.append(_fit_head(model, chip, head, linears, fit_inputs, held_inputs, teacher, config, device))
    return {"blocks": blocks, "cached_input_tokens": fit_inputs.tokens() + held_inputs.tokens()}


def _fit_head(model, chip, params, linears, fit_inputs: BlockInputs, held_inputs: BlockInputs, teacher: Teacher,
              config, device) -> dict:
    """The final norm and the output layer, against the clean next-token distributions."""
    started = time.perf_counter()
    norm, head = final_norm(model), model.get_output_embeddings()
    if norm is None or head is None:  # no known path from the last layer to the logits: the head is left as it is
        return {"block": "head", "parameters": 0, "seconds": 0.0, "skipped": "no final norm found"}

    dtype = compute_dtype(head)

    def log_probs(inputs: BlockInputs, i: int, rows: slice = slice(None)) -> torch.Tensor:
        return head(norm(inputs.hidden[i][rows].to(device, dtype))).float().log_softmax(-1)

    def fit_loss(i: int) -> torch.Tensor:
        """The batch's mean KL, its gradient accumulated one sequence at a time (a sequence's logits are the largest
        activation of the whole fit: window × vocabulary)."""
        sequences = len(fit_inputs.hidden[i])
        total = 0.0
        for row in range(sequences):
            target = teacher.fit[i].rows(slice(row, row + 1))
            loss = target.kl(log_probs(fit_inputs, i, slice(row, row + 1))).mean() / sequences
            loss.backward()
            total += float(loss.detach())
        return torch.tensor(total)

    if config.retune_start == "least_squares":
        least_squares_fit(chip, {n: m for n, m in linears.items() if chip.module_of(n)[0] is head},
                          lambda: [head(norm(fit_inputs.input(i, device, dtype))) for i in range(len(fit_inputs))])
    record = adam_fit(params, config.retune_block_steps, config.retune_block_lr, config.retune_eval_every,
                      batches=len(fit_inputs), fit_loss=fit_loss, backward=False,
                      held_loss=lambda i: teacher.holdout[i].kl(log_probs(held_inputs, i)).mean(),
                      held_batches=len(held_inputs))
    return {"block": "head", "parameters": sum(p.numel() for p in params),
            "seconds": time.perf_counter() - started, **record}


def adam_fit(params: list[nn.Parameter], steps: int, lr: float, eval_every: int, batches: int,
             fit_loss: Callable[[int], torch.Tensor], held_loss: Callable[[int], torch.Tensor],
             held_batches: int, backward: bool = True) -> dict:
    """Adam on `fit_loss` over the fit batches in a seeded order (`backward=False`: `fit_loss` accumulates its own
    gradients); every `eval_every` steps the mean held-out loss is measured and the parameters of the best step (the
    start included) are kept."""

    @torch.no_grad()
    def held() -> float:
        return sum(float(held_loss(i)) for i in range(held_batches)) / max(held_batches, 1)

    start = best = held()
    if not params or steps == 0:
        return {"steps": 0, "best_step": 0, "holdout_loss_start": start, "holdout_loss_after": start}
    optimizer = torch.optim.Adam(params, lr=lr)
    order = torch.Generator().manual_seed(0)
    best_state, best_step = [p.detach().clone() for p in params], 0
    permutation: list[int] = []
    for step in range(1, steps + 1):
        if not permutation:
            permutation = torch.randperm(batches, generator=order).tolist()
        optimizer.zero_grad(set_to_none=True)
        loss = fit_loss(permutation.pop())
        if backward:
            loss.backward()
        optimizer.step()
        del loss
        trim_heap()  # a step's activations, freed in many sizes: given back, or the heap grows step after step
        if step % eval_every == 0 or step == steps:
            now = held()
            if now < best:
                best, best_step = now, step
                best_state = [p.detach().clone() for p in params]
    with torch.no_grad():
        for param, value in zip(params, best_state):
            param.copy_(value)
    return {"steps": steps, "best_step": best_step, "holdout_loss_start": start, "holdout_loss_after": best}


@torch.no_grad()
def block_sensitivity(model: nn.Module, chip: ChipHandle, probe: torch.Tensor, batch_size: int, names: list[str],
                      clean_layers: list[list[torch.Tensor]]) -> list[dict]:
    """Each on-chip matrix of `names` ranked by what its noise costs its own decoder layer: the relative error of the
    layer's output against the clean twin's (`clean_layers[layer][batch]`, on the held-out sequences of which `probe`
    is the first rows) on the chip's own inputs, less that error with the matrix alone made digital; most per weight
    first. The chip is run layer by layer on cached inputs, so the model is read about (matrices per layer + 1) times
    whatever the number of matrices. A matrix outside every decoder layer is not ranked."""
    device = next(model.parameters()).device
    inputs = first_layer_inputs(model, probe, batch_size)
    results = []
    for index, (layer_name, layer) in enumerate(decoder_layers(model)):
        targets = [clean_layers[index][i][: len(inputs.hidden[i])] for i in range(len(inputs))]

        def error() -> float:
            return sum(float(relative_error(inputs.run(layer, i, device), targets[i])) * len(targets[i])
                       for i in range(len(inputs))) / len(probe)

        base = error()
        for name in (n for n in names if n.startswith(layer_name + ".")):
            chip.make_digital(name)
            gain = base - error()
            chip.make_digital(name, False)
            size = chip.size(name)
            results.append({"tensor": name, "weights": size, "gain": gain, "error_gain": gain,
                            "gain_per_mweight": gain / size * 1e6})
        inputs = inputs.through(layer, device)
    return sorted(results, key=lambda r: r["gain_per_mweight"], reverse=True)
