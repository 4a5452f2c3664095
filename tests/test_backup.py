"""The clean copy restore() reads back: bit for bit, whole or one slot at a time, in memory or on disk; and the
folders dead processes left behind are removed, a live one's never."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from romer.noise import backup as backups
from romer.noise.backup import DiskBackup, MemoryBackup, remove_stale


def tensors():
    generator = torch.Generator().manual_seed(0)
    return {"dense": torch.randn(70, 33, generator=generator),
            "fused": torch.randn(5, 12, 9, generator=generator).to(torch.bfloat16),
            "vector": torch.randn(17, generator=generator).half(),
            "scalar": torch.tensor(3.5)}


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_every_tensor_and_every_slot_reads_back_bit_for_bit(tmp_path, kind, monkeypatch):
    monkeypatch.setattr(backups, "CHUNK_BYTES", 64)  # many chunks per tensor on disk
    store = MemoryBackup() if kind == "memory" else DiskBackup(tmp_path)
    originals = tensors()
    for name, tensor in originals.items():
        store.save(name, tensor)
    for name, tensor in originals.items():
        assert name in store
        back = store.load(name)
        assert back.dtype == tensor.dtype and back.shape == tensor.shape
        assert torch.equal(back.reshape(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8))  # the bits
    for slot in range(5):
        assert torch.equal(store.load("fused", slot), originals["fused"][slot])
    assert "absent" not in store
    store.close()


def test_a_truncated_file_is_an_error_not_silent_zeros(tmp_path):
    store = DiskBackup(tmp_path)
    store.save("dense", tensors()["dense"])
    (path,) = [p for p in tmp_path.rglob("*.bin")]
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(OSError, match="truncated"):
        store.load("dense")
    store.close()
    assert not list(tmp_path.glob("romer-clean-*"))


def test_only_the_folders_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / f"romer-clean-{dead}-abc").mkdir()
    (tmp_path / f"romer-clean-{os.getppid()}-def").mkdir()  # alive: the test runner's parent
    (tmp_path / "romer-clean-notapid").mkdir()
    removed = remove_stale(tmp_path)
    assert [p.name for p in removed] == [f"romer-clean-{dead}-abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"romer-clean-{os.getppid()}-def",
                                                                 "romer-clean-notapid"])
