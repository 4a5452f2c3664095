"""Token-level perplexity with the semantics of Hugging Face's perplexity guide.

The whole text is tokenized as one stream. Windows of `window` tokens start every `stride`
tokens; each window scores only the tokens new to it that have a predecessor inside it. With
overlap (stride < window) every token after the first is scored exactly once, with at least
`window - stride` tokens of context (less only in the first window); with disjoint windows
(stride = window) each window's first token goes unscored, as in the guide.
PPL = exp(total NLL / scored tokens). The last window ends at the end of the stream and may
be shorter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from romer.errors import RomerError
from romer.progress import progress_bar
from romer.resident import trim_heap

MAX_DEFAULT_WINDOW = 2048


@dataclass(frozen=True)
class Window:
    begin: int
    end: int
    score_from: int  # first position whose token this window scores (it has a predecessor in the window)


@dataclass(frozen=True)
class PerplexityResult:
    ppl: float
    nll: float
    scored_tokens: int
    tokens: int
    window: int
    stride: int
    windows: int

    def as_dict(self) -> dict:
        return {"ppl": self.ppl, "nll_mean": self.nll / self.scored_tokens, "scored_tokens": self.scored_tokens,
                "tokens": self.tokens, "window": self.window, "stride": self.stride, "windows": self.windows}


def default_window(model: nn.Module) -> int:
    """The model's trained context, capped so that big models stay affordable."""
    context = getattr(model.config, "max_position_embeddings", None) or MAX_DEFAULT_WINDOW
    return min(int(context), MAX_DEFAULT_WINDOW)


def require_one_window(tokens: int, window: int) -> None:
    if tokens < window:
        raise RomerError(f"the text has {tokens} tokens, fewer than one window of {window}; "
                         "use a longer text or a smaller --window")


def sliding_windows(tokens: int, window: int, stride: int) -> Iterator[Window]:
    if window < 2:
        raise RomerError(f"--window must be at least 2 tokens, got {window}")
    if not 1 <= stride <= window:
        raise RomerError(f"--stride must be between 1 and the window ({window}), got {stride}; "
                         "a larger stride would leave tokens unscored")
    require_one_window(tokens, window)
    previous_end = 0
    for begin in range(0, tokens, stride):
        end = min(begin + window, tokens)
        yield Window(begin, end, max(previous_end, begin + 1))
        previous_end = end
        if end == tokens:
            break


def tokenize_stream(tokenizer, text: str) -> torch.Tensor:
    """The whole text as one 1-D stream of token ids (special tokens as the tokenizer adds them)."""
    return torch.tensor(tokenizer(text, verbose=False)["input_ids"], dtype=torch.long)


def _batches(windows: list[Window], batch_size: int) -> Iterator[list[Window]]:
    """Consecutive windows of equal length, at most `batch_size` at a time (no padding needed)."""
    batch: list[Window] = []
    for w in windows:
        if batch and (len(batch) == batch_size or w.end - w.begin != batch[0].end - batch[0].begin):
            yield batch
            batch = []
        batch.append(w)
    if batch:
        yield batch


@torch.no_grad()
def perplexity(model: nn.Module, ids: torch.Tensor, window: int, stride: int | None = None,
               batch_size: int = 8, progress: bool = False, label: str = "perplexity") -> PerplexityResult:
    """Perplexity of `model` on the token stream `ids`; `stride` defaults to the window (disjoint windows: each
    token is read once, the cheapest honest score, and the one every campaign and table reports)."""
    stride = stride or window
    windows = list(sliding_windows(ids.numel(), window, stride))
    device = next(model.parameters()).device
    total_nll = 0.0
    scored = 0
    with progress_bar(label, total=len(windows), enabled=progress) as advance:
        for batch in _batches(windows, batch_size):
            inputs = torch.stack([ids[w.begin:w.end] for w in batch]).to(device)
            logits = model(input_ids=inputs).logits.float()
            nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), inputs[:, 1:], reduction="none")
            for row, w in enumerate(batch):
                total_nll += nll[row, w.score_from - w.begin - 1:].double().sum().item()
                scored += w.end - w.score_from
            advance(len(batch))
    trim_heap()  # each batch's logits and activations, freed: given back, not kept by the heap
    return PerplexityResult(ppl=math.exp(total_nll / scored), nll=total_nll, scored_tokens=scored,
                            tokens=ids.numel(), window=window, stride=stride, windows=len(windows))


def sequence_perplexity(model: nn.Module, sequences: torch.Tensor, batch_size: int = 8) -> float:
    """`perplexity` of whole sequences [n, window], read as a stream of disjoint windows: each sequence scores its
    tokens after the first. The score calibration choices are made on (always held-out calibration tokens)."""
    window = sequences.shape[-1]
    return perplexity(model, sequences.reshape(-1), window, window, batch_size).ppl
