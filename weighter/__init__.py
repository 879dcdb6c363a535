"""weighter: index, query and cluster a corpus of recordings by what is heard in them.

The package layout is the architecture:

- ``weighter.audio``: reading audio files, directories and manifests (input to everything).
- ``weighter.corpus``: the synthetic multi-speaker corpus (utterance bank, conversation mixer,
  vector simulation).
- ``weighter.embedder``: audio -> per-file embedding sets (the Weighter model).
- ``weighter.index``: store + nearest-neighbour "like" retrieval.
- ``weighter.cluster``: discovered groups over a whole corpus.
"""

__version__ = "0.1.0"
