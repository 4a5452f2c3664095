"""Random streams keyed by name: the noise of a tensor depends only on (seed, key), never on
which other tensors are noised or in what order."""

from __future__ import annotations

import hashlib

import torch


def stream(seed: int, *key: object, device: torch.device | str = "cpu") -> torch.Generator:
    digest = hashlib.sha256("/".join(map(str, (seed, *key))).encode()).digest()
    generator = torch.Generator(device=device)
    generator.manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    return generator
