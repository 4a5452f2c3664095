"""Record routing while a model runs, per MoE layer, through the family's adapter.

    with RoutingRecorder(model, keep_choices=True, logit_every=4) as recorder:
        model(input_ids)
    recorder.metrics()                  # LoadMetrics per layer
    routing_fidelity(clean, recorder)   # agreement with a clean capture on the same tokens

Hooks only observe: a forward with the recorder attached computes exactly what it computes
without. Memory is bounded: counts always; the chosen experts of every token only with
`keep_choices` (k small integers per token and layer); router logits only for every
`logit_every`-th token and at most `max_logit_rows` tokens per layer.
"""

from __future__ import annotations

import torch
from torch import nn

from romer.moe.adapter import MoeLayer, adapter_for
from romer.moe.adapter import require_moe
from romer.moe.metrics import LoadMetrics, load_metrics

MAX_LOGIT_ROWS = 32768  # router-logit rows any capture keeps per layer: the one bound on the sample's memory


class RoutingRecorder:
    def __init__(self, model: nn.Module, keep_choices: bool = False, logit_every: int = 0,
                 max_logit_rows: int = MAX_LOGIT_ROWS):
        require_moe(model, type(model).__name__)
        self.adapter = adapter_for(model)
        self.layers: list[MoeLayer] = self.adapter.layers(model)
        self.counts = [torch.zeros(layer.num_experts, dtype=torch.long) for layer in self.layers]
        self.keep_choices = keep_choices
        self.logit_every = logit_every
        self.max_logit_rows = max_logit_rows
        self.choices: list[list[torch.Tensor]] = [[] for _ in self.layers]
        self.logits: list[list[torch.Tensor]] = [[] for _ in self.layers]
        self._seen = [0 for _ in self.layers]
        self._kept = [0 for _ in self.layers]
        self._handles: list = []

    def __enter__(self) -> "RoutingRecorder":
        for layer in self.layers:
            self._handles.append(layer.router.register_forward_hook(self._hook(layer)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, layer: MoeLayer):
        def hook(module: nn.Module, args, output) -> None:
            routed = self.adapter.read_router_output(layer, output)
            indices = routed.indices.reshape(-1, routed.indices.shape[-1]).detach()
            i = layer.index
            self.counts[i] += torch.bincount(indices.flatten().cpu(), minlength=layer.num_experts)
            if self.keep_choices:
                self.choices[i].append(indices.to("cpu", torch.int32))
            if self.logit_every and self._kept[i] < self.max_logit_rows:
                with torch.no_grad():
                    logits = routed.logits if routed.logits is not None else self.adapter.router_logits(layer, args[0])
                logits = logits.reshape(-1, layer.num_experts)
                first = (-self._seen[i]) % self.logit_every
                rows = logits[first::self.logit_every][: self.max_logit_rows - self._kept[i]]
                self.logits[i].append(rows.detach().float().cpu())
                self._kept[i] += len(rows)
            self._seen[i] += indices.shape[0]
        return hook

    def metrics(self) -> list[LoadMetrics]:
        return [load_metrics(counts) for counts in self.counts]

    def layer_choices(self, index: int) -> torch.Tensor:
        return torch.cat(self.choices[index]) if self.choices[index] else torch.empty(0, 0, dtype=torch.int32)

    def layer_logits(self, index: int) -> torch.Tensor:
        return torch.cat(self.logits[index]) if self.logits[index] else torch.empty(0, 0)


def routing_fidelity(clean: RoutingRecorder, noisy: RoutingRecorder) -> list[dict]:
    """Per layer: top-k set agreement (|S∩S'|/k), Jaccard (|S∩S'|/|S∪S'|) and, where logits were
    kept, KL(softmax(clean) ‖ softmax(noisy)), over the same tokens in the same order."""
    results = []
    for index, layer in enumerate(clean.layers):
        a, b = clean.layer_choices(index), noisy.layer_choices(index)
        if a.shape != b.shape or a.numel() == 0:
            raise ValueError("routing_fidelity needs two captures with keep_choices=True over the same tokens")
        k = a.shape[-1]
        overlap = (a[:, :, None] == b[:, None, :]).any(dim=-1).sum(dim=-1).double()
        record = {"topk_agreement": float((overlap / k).mean()),
                  "jaccard": float((overlap / (2 * k - overlap)).mean())}
        p, q = clean.layer_logits(index), noisy.layer_logits(index)
        if p.numel() and p.shape == q.shape:
            log_p, log_q = p.double().log_softmax(-1), q.double().log_softmax(-1)
            record["kl"] = float((log_p.exp() * (log_p - log_q)).sum(-1).mean())
        results.append(record)
    return results
