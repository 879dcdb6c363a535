"""weighter: index, query and cluster a corpus of recordings by who is heard in them.

The package layout is the architecture:

- ``weighter.audio``: reading audio files, directories and manifests (input to everything).
- ``weighter.corpus``: the synthetic multi-speaker corpus (utterance bank, conversation mixer,
  vector simulation).
- ``weighter.embedder``: audio -> per-file embedding sets (the Weighter model).
- ``weighter.index``: store + nearest-neighbour "like" retrieval.
- ``weighter.cluster``: discovered groups over a whole corpus.

The names most programs need are importable from here; each is loaded on first use, so
``import weighter`` itself stays light (no torch, FAISS or corpus generator).

Examples
--------
>>> from weighter import Embedder, Store, add_files, query_store  # doctest: +SKIP
>>> embedder = Embedder.load()  # the model shipped with the package  # doctest: +SKIP
>>> with Store("calls.store", create=True) as store:  # doctest: +SKIP
...     add_files(store, embedder, ["a.flac", "b.flac"])
...     matches = query_store(store, embedder.embed(["new.flac"])[0], k=5)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the module that defines it (imported on first access, PEP 562)
_LAZY = {
    "AudioSource": "weighter.audio",
    "discover": "weighter.audio",
    "load_audio": "weighter.audio",
    "read_manifest": "weighter.audio",
    "write_manifest": "weighter.audio",
    "EmbeddingSet": "weighter.embedding_set",
    "Embedder": "weighter.embedder",
    "DEFAULT_MODEL": "weighter.embedder",
    "ModelMetadata": "weighter.embedder",
    "Store": "weighter.index",
    "Match": "weighter.index",
    "add_files": "weighter.index",
    "remove_files": "weighter.index",
    "query_store": "weighter.index",
    "query_many": "weighter.index",
    "StoreInfo": "weighter.index",
    "AddResult": "weighter.index",
    "RemoveResult": "weighter.index",
    "SlotClusterer": "weighter.cluster",
    "cluster_store": "weighter.cluster",
    "assign_set": "weighter.cluster",
    "run_result": "weighter.cluster",
    "ConversationMixer": "weighter.corpus",
    "MixerConfig": "weighter.corpus",
    "BankSpec": "weighter.corpus",
    "open_or_build_bank": "weighter.corpus",
    "write_corpus": "weighter.corpus",
    "WeighterError": "weighter.errors",
    "AudioError": "weighter.errors",
    "ManifestError": "weighter.errors",
    "CorpusError": "weighter.errors",
    "StoreError": "weighter.index",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # what static tools and IDEs see; at run time __getattr__ imports on demand
    from weighter.audio import AudioSource, discover, load_audio, read_manifest, write_manifest
    from weighter.cluster import SlotClusterer, assign_set, cluster_store, run_result
    from weighter.corpus import BankSpec, ConversationMixer, MixerConfig, open_or_build_bank, write_corpus
    from weighter.embedder import DEFAULT_MODEL, Embedder, ModelMetadata
    from weighter.embedding_set import EmbeddingSet
    from weighter.errors import AudioError, CorpusError, ManifestError, WeighterError
    from weighter.index import (AddResult, Match, RemoveResult, Store, StoreError, StoreInfo, add_files, query_many,
                                query_store, remove_files)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'weighter' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
