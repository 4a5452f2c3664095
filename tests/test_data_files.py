import json
import subprocess
import sys

import pytest

from romer.data import load_corpus
from romer.errors import RomerError


def test_txt_file_is_one_stream(sample_txt):
    corpus = load_corpus(str(sample_txt))
    assert corpus.text == sample_txt.read_text() and corpus.split == "all"


def test_jsonl_documents_are_joined_by_blank_lines(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in ["alpha", "beta", "gamma"]) + "\n")
    corpus = load_corpus(str(path))
    assert corpus.text == "alpha\n\nbeta\n\ngamma" and corpus.documents == 3


@pytest.mark.parametrize("content, message", [
    ('{"text": "ok"}\n{"txt": "no"}\n', r"docs.jsonl:2 is not a JSON object with a string field \"text\""),
    ('not json\n', r"docs.jsonl:1 is not a JSON object"),
    ('{"text": 3}\n', r"docs.jsonl:1"),
    ('\n\n', r"holds no text"),
])
def test_bad_jsonl_names_the_line(tmp_path, content, message):
    path = tmp_path / "docs.jsonl"
    path.write_text(content)
    with pytest.raises(RomerError, match=message):
        load_corpus(str(path))


def test_missing_file_and_split_on_a_file(tmp_path, sample_txt):
    with pytest.raises(RomerError, match="does not exist"):
        load_corpus(str(tmp_path / "missing.txt"))
    with pytest.raises(RomerError, match="drop --split"):
        load_corpus(str(sample_txt), "test")


def test_unknown_dataset_lists_the_registry():
    with pytest.raises(RomerError, match="unknown dataset 'wikitext-9'; choose one of stdlib, wikitext103, wikitext2"):
        load_corpus("wikitext-9")


def test_wikitext_offline_suggests_a_local_file():
    code = ("from romer.data import load_corpus\n"
            "from romer.errors import RomerError\n"
            "try:\n    load_corpus('wikitext2')\nexcept RomerError as e:\n    print(e)\n")
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": "/tmp/romer-no-cache"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)  # generous: a loaded machine is slow, never wrong
    assert "could not load wikitext/wikitext-2-raw-v1" in result.stdout
    assert "pass a local .txt or .jsonl file with --data PATH" in result.stdout
