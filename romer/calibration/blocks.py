"""A decoder's layers as blocks that can be run one at a time on cached inputs (block-wise `retune`).

Found from the model's structure, not from names: transformers builds every decoder layer as a
`GradientCheckpointingLayer`, in model order. A layer is replayed with the keyword arguments the
model itself passed it (rotary position embeddings, attention mask, position ids), captured on the
way in, so no family's signature is written down here.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from romer.errors import RomerError


def decoder_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of each decoder layer, in model order."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [(name, module) for name, module in model.named_modules() if isinstance(module, GradientCheckpointingLayer)]
    if not layers:
        raise RomerError(f"{type(model).__name__} has no decoder layers romer can run one at a time; fit retune end to "
                         "end instead (retune_engine='end_to_end')")
    return layers


def final_norm(model: nn.Module) -> nn.Module | None:
    """The normalisation between the last decoder layer and the output head (`norm` of the decoder), if any."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    norm = getattr(decoder, "norm", None)
    return norm if isinstance(norm, nn.Module) else None


def compute_dtype(module: nn.Module) -> torch.dtype:
    """The floating dtype a module computes in: that of its first floating parameter (float32 if it has none)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)


def layer_output(output) -> torch.Tensor:
    """The hidden states a decoder layer returns (a tensor, or the first item of a tuple in older versions)."""
    return output[0] if isinstance(output, tuple) else output


class _Stop(Exception):
    pass


@dataclass
class BlockInputs:
    """One decoder layer's inputs over a set of sequences, one entry per batch: the hidden states (on the host,
    float32) and the other arguments the model passed the layer (on its device; the same for batches of one shape)."""

    hidden: list[torch.Tensor]
    arguments: list[tuple[tuple, dict]]

    def __len__(self) -> int:
        return len(self.hidden)

    def tokens(self) -> int:
        return sum(h.shape[0] * h.shape[1] for h in self.hidden)

    def run(self, layer: nn.Module, batch: int, device) -> torch.Tensor:
        """The layer's output on batch `batch` (float32), its input given in the layer's own dtype."""
        args, kwargs = self.arguments[batch]
        return layer_output(layer(self.input(batch, device, compute_dtype(layer)), *args, **kwargs)).float()

    def input(self, batch: int, device, dtype: torch.dtype) -> torch.Tensor:
        """Batch `batch`'s hidden states on `device` in `dtype` (they are kept in float32 on the host)."""
        return self.hidden[batch].to(device, dtype)

    @torch.no_grad()
    def through(self, layer: nn.Module, device) -> "BlockInputs":
        """The next layer's inputs: this layer run on every batch."""
        return BlockInputs([self.run(layer, i, device).to("cpu") for i in range(len(self))], self.arguments)


@torch.no_grad()
def first_layer_inputs(model: nn.Module, sequences: torch.Tensor, batch_size: int) -> BlockInputs:
    """The first decoder layer's inputs on `sequences`, stopping each forward pass there (the embeddings only)."""
    _, first = decoder_layers(model)[0]
    device = next(model.parameters()).device
    hidden, arguments = [], []

    def capture(module, args, kwargs):
        if args:
            hidden.append(args[0].detach().float().to("cpu"))
            arguments.append((tuple(args[1:]), dict(kwargs)))
        else:
            kwargs = dict(kwargs)
            hidden.append(kwargs.pop("hidden_states").detach().float().to("cpu"))
            arguments.append(((), kwargs))
        raise _Stop

    with ExitStack() as stack:
        stack.callback(first.register_forward_pre_hook(capture, with_kwargs=True).remove)
        for start in range(0, len(sequences), batch_size):
            try:
                model(input_ids=sequences[start:start + batch_size].to(device), use_cache=False)
            except _Stop:
                pass
    return BlockInputs(hidden, arguments)


@torch.no_grad()
def record_layer_outputs(model: nn.Module, run: Callable[[], None], dtype=torch.float16) -> list[list[torch.Tensor]]:
    """Every decoder layer's output during `run()` (which runs the model's forward passes), on the host in `dtype`:
    [layer][forward pass]."""
    layers = decoder_layers(model)
    outputs: list[list[torch.Tensor]] = [[] for _ in layers]
    with ExitStack() as stack:
        for index, (_, layer) in enumerate(layers):
            def hook(module, args, output, index=index):
                outputs[index].append(layer_output(output).detach().to("cpu", dtype))
            stack.callback(layer.register_forward_hook(hook).remove)
        run()
    return outputs

