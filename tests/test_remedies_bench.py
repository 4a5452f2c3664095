"""bench/remedies.py's report: folders pooled on the same chips, a variant read under the name that now means what
was run, and every row tested against the variants asked for."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def remedies():
    if str(ROOT / "bench") not in sys.path:  # the script imports its neighbours, as `python bench/remedies.py` does
        sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("bench_remedies", ROOT / "bench" / "remedies.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write(folder: Path, rows: list[tuple]) -> str:
    folder.mkdir()
    records = [{"model": "m", "noise": "clean", "seed": -1, "variant": "none", "ppl": 10.0}]
    records += [{"model": "m", "noise": "cim-80c", "seed": seed, "variant": variant, "ppl": ppl}
                for variant, seed, ppl in rows]
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(folder)


def test_a_renamed_variant_is_pooled_and_tested_against_another(remedies, tmp_path):
    noisy = {0: 20.0, 1: 22.0, 2: 21.0}
    before = write(tmp_path / "before", [("none", s, p) for s, p in noisy.items()]
                   + [("outlier-retune", s, p - 8.0) for s, p in noisy.items()])
    after = write(tmp_path / "after", [("none", s, p) for s, p in noisy.items()]
                  + [("outlier-retune-attention", 0, 11.5), ("outlier-retune-attention", 1, 13.4),
                     ("outlier-retune-attention", 2, 12.7)])
    renames = remedies.parse_renames([f"{before}:outlier-retune=outlier-retune-even",
                                      f"{after}:outlier-retune-attention=outlier-retune"])
    tables = remedies.leaderboard(remedies.read_logs(f"{before},{after}", renames), ("outlier-retune-even",))
    rows = tables[("m", "cim-80c")]["rows"]
    assert set(rows) == {"none", "outlier-retune-even", "outlier-retune"}
    assert rows["outlier-retune-even"]["recovery"]["mean"] == pytest.approx((8 / 10 + 8 / 12 + 8 / 11) / 3)
    assert rows["outlier-retune"]["recovery"]["mean"] == pytest.approx((8.5 / 10 + 8.6 / 12 + 8.3 / 11) / 3)
    assert 0 < rows["outlier-retune"]["p_vs"]["outlier-retune-even"] < 0.05
    assert "p vs outlier-retune-even" in remedies.markdown(tables)


def test_folders_that_disagree_on_a_shared_unit_are_refused(remedies, tmp_path):
    one = write(tmp_path / "one", [("none", 0, 20.0)])
    other = write(tmp_path / "other", [("none", 0, 20.5)])
    with pytest.raises(SystemExit, match="not the same chips"):
        remedies.read_logs(f"{one},{other}")


def test_a_rename_without_its_folder_is_refused_in_one_line(remedies):
    with pytest.raises(SystemExit, match="FOLDER:OLD=NEW"):
        remedies.parse_renames(["outlier-retune=outlier-retune-even"])
