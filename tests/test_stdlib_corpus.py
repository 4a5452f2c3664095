import hashlib
import random

import pytest

from romer.data import load_corpus
from romer.data import stdlib


def test_split_rule_is_the_documented_hash_rule():
    for path in ["os.py", "json/decoder.py", "email/mime/text.py", "a/b/c.py"]:
        bucket = int(hashlib.sha256(path.encode()).hexdigest()[:8], 16) % 100
        expected = "test" if bucket < 3 else "calib" if bucket < 6 else "train"
        assert stdlib.split_of(path) == expected


def test_split_rule_does_not_depend_on_listing_order():
    files = stdlib.source_files()
    shuffled = files[:]
    random.Random(0).shuffle(shuffled)
    assert {f: stdlib.split_of(f) for f in files} == {f: stdlib.split_of(f) for f in shuffled}


def test_splits_are_disjoint_cover_every_file_and_are_nonempty():
    files = stdlib.source_files()
    by_split = {s: {f for f in files if stdlib.split_of(f) == s} for s in stdlib.SPLITS}
    assert sum(len(v) for v in by_split.values()) == len(files)
    assert set().union(*by_split.values()) == set(files)
    assert all(by_split[s] for s in stdlib.SPLITS)
    assert len(by_split["train"]) > 10 * len(by_split["test"])


def test_test_suites_and_site_packages_are_left_out():
    files = stdlib.source_files()
    assert "os.py" in files
    assert not any(part in ("test", "tests", "site-packages", "idle_test") for f in files for part in f.split("/")[:-1])


def test_corpus_is_reproducible_and_fingerprinted():
    first, second = load_corpus("stdlib", "calib"), load_corpus("stdlib", "calib")
    assert first.text == second.text and first.sha256 == second.sha256
    assert first.sha256 == hashlib.sha256(first.text.encode()).hexdigest()
    assert load_corpus("stdlib").split == "test"
    assert load_corpus("stdlib", "test").sha256 != first.sha256


def test_unknown_split_names_the_choices():
    with pytest.raises(Exception, match="no split 'dev'; choose one of train, calib, test"):
        load_corpus("stdlib", "dev")
