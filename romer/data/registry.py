"""Where text comes from: a registry of named corpora, plus local `.txt` / `.jsonl` files.

Add a corpus with `register(CorpusSource(...))`; `load_corpus` resolves a user's `--data`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from romer.data import stdlib
from romer.data.corpus import Corpus
from romer.errors import RomerError
from romer.registry import Registry, caller_module

DOCUMENT_SEPARATOR = "\n\n"
FILE_SPLIT = "all"


@dataclass(frozen=True)
class CorpusSource:
    """A named corpus: its splits and how to read the documents of one split."""

    name: str
    description: str
    splits: tuple[str, ...]
    default_split: str
    read: Callable[[str], list[str]]


CORPORA: Registry[CorpusSource] = Registry("corpus")


def register(source: CorpusSource) -> CorpusSource:
    """Add a corpus; a name already registered is refused in one line naming both origins."""
    return CORPORA.add(source.name, source, caller_module())


def corpus_names() -> list[str]:
    return sorted(CORPORA.names())


def corpus_source(name: str) -> CorpusSource:
    source = CORPORA.get(name)
    if source is None:
        raise RomerError(f"unknown dataset '{name}'; choose one of {', '.join(corpus_names())}, "
                         "or pass a local .txt or .jsonl file")
    return source


def load_corpus(data: str, split: str | None = None) -> Corpus:
    """Resolve `--data` (a registered name or a local file) and `--split` into one text stream."""
    path = Path(data).expanduser()
    if path.suffix in (".txt", ".jsonl") or path.exists():
        return _load_file(path, split)
    source = corpus_source(data)
    split = split or source.default_split
    if split not in source.splits:
        raise RomerError(f"dataset '{data}' has no split '{split}'; choose one of {', '.join(source.splits)}")
    documents = source.read(split)
    if not any(doc.strip() for doc in documents):
        raise RomerError(f"dataset '{data}' split '{split}' is empty")
    return Corpus(name=data, split=split, text=DOCUMENT_SEPARATOR.join(documents), documents=len(documents))


def _load_file(path: Path, split: str | None) -> Corpus:
    if path.is_dir():
        raise RomerError(f"data path {path} is a folder; pass a .txt or .jsonl file or a dataset name "
                         f"({', '.join(corpus_names())})")
    if not path.is_file():
        raise RomerError(f"data file {path} does not exist; pass an existing .txt or .jsonl file or a dataset name "
                         f"({', '.join(corpus_names())})")
    if split not in (None, FILE_SPLIT):
        raise RomerError(f"a data file is scored as one stream and has no split '{split}'; drop --split")
    if path.suffix == ".jsonl":
        documents = _read_jsonl(path)
    elif path.suffix == ".txt":
        try:
            documents = [path.read_text(encoding="utf-8", errors="replace")]
        except OSError as error:
            raise RomerError(f"cannot read data file {path}: {error.strerror}") from None
    else:
        raise RomerError(f"cannot read {path}: romer reads .txt (plain text) and .jsonl (one {{\"text\": ...}} per line)")
    if not any(doc.strip() for doc in documents):
        raise RomerError(f"data file {path} holds no text")
    return Corpus(name=str(path), split=FILE_SPLIT, text=DOCUMENT_SEPARATOR.join(documents), documents=len(documents))


def _read_jsonl(path: Path) -> list[str]:
    documents = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            documents.append(record["text"] if isinstance(record, dict) else None)
        except (json.JSONDecodeError, KeyError):
            documents.append(None)
        if not isinstance(documents[-1], str):
            raise RomerError(f"{path}:{number} is not a JSON object with a string field \"text\"; "
                             "write one {\"text\": \"...\"} per line")
    return documents


def _hub_reader(dataset: str, config: str, split_map: dict[str, str]) -> Callable[[str], list[str]]:
    def read(split: str) -> list[str]:
        try:
            import datasets
        except ImportError:
            raise RomerError("this dataset needs the 'datasets' package: pip install 'romer[eval]'") from None
        try:
            rows = datasets.load_dataset(dataset, config, split=split_map[split])
        except Exception as error:  # datasets raises many types for "offline"; all mean the same to the user
            raise RomerError(f"could not load {dataset}/{config} from the Hugging Face Hub ({type(error).__name__}); "
                             "offline, pass a local .txt or .jsonl file with --data PATH instead") from None
        # Joined by load_corpus with blank lines, exactly as Hugging Face's perplexity guide joins WikiText rows.
        return list(rows["text"])
    return read


register(CorpusSource(
    name="stdlib",
    description="the running Python's standard-library sources (offline; split by file path hash)",
    splits=stdlib.SPLITS, default_split="test", read=stdlib.split_documents))
register(CorpusSource(
    name="wikitext2",
    description="WikiText-2 raw (Hugging Face hub: wikitext / wikitext-2-raw-v1)",
    splits=("train", "calib", "test"), default_split="test",
    read=_hub_reader("wikitext", "wikitext-2-raw-v1", {"train": "train", "calib": "validation", "test": "test"})))
register(CorpusSource(
    name="wikitext103",
    description="WikiText-103 raw (Hugging Face hub: wikitext / wikitext-103-raw-v1)",
    splits=("train", "calib", "test"), default_split="test",
    read=_hub_reader("wikitext", "wikitext-103-raw-v1", {"train": "train", "calib": "validation", "test": "test"})))
