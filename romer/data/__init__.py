"""Text corpora: the offline `stdlib` corpus, Hugging Face datasets and local files."""

from romer.data.corpus import Corpus
from romer.data.registry import CorpusSource, corpus_names, load_corpus, register

__all__ = ["Corpus", "CorpusSource", "corpus_names", "load_corpus", "register"]
