"""What the quality benchmarks share: the standard mixed corpus, a store of it, and its figures.

Imported by the scripts beside it (``python benchmarks/X.py`` puts this folder on the path).
"""

from pathlib import Path

import numpy as np

from weighter.audio import AudioSource, read_manifest
from weighter.cluster import SlotClusterer, cluster_store
from weighter.corpus import MixerConfig, UtteranceBank, write_corpus
from weighter.evaluation import evaluate_store, read_rttm
from weighter.index import Store, add_files

# The figures' corpus: 1-4 speakers, 10-60 s, background noise, 20% telephone channel, 10% overlap.
STANDARD_MIX = MixerConfig(overlap=0.1, telephone=0.2)


def mixed_corpus(bank: UtteranceBank, directory: Path, split: str, files: int, seed: int,
                 config: MixerConfig = STANDARD_MIX) -> Path:
    """Write ``files`` conversations of the bank's ``split`` to ``directory``; returns it."""
    write_corpus(bank, directory, split, files, config, seed=seed, progress=False)
    return directory


def corpus_truth(corpus: Path) -> tuple[list[AudioSource], dict]:
    """A written corpus's files with their likes, and its RTTM."""
    return read_manifest(corpus / "manifest.csv"), read_rttm(corpus / "reference.rttm")


def indexed_store(embedder, sources: list[AudioSource], directory: Path) -> Store:
    """A new store at ``directory`` holding the sources' embedding sets."""
    store = Store(directory, create=True)
    add_files(store, embedder, sources)
    return store


def clustered_figures(store: Store, sources: list[AudioSource], rttm: dict,
                      clusterer: SlotClusterer | None = None, assign_outliers: float | None = None) -> dict:
    """Cluster the store (the default clusterer unless given; outliers assigned at that
    strength when given) and score everything."""
    run = cluster_store(store, clusterer or SlotClusterer(), assign_outliers)
    return evaluate_store(store, sources, rttm, run)


def mean_min_max(rows: list[dict], keys) -> dict:
    """Each figure's mean, min and max over rows (corpora): {"mean": {key: ...}, "min": ..., "max": ...}."""
    values = {k: np.array([r[k] for r in rows], float) for k in keys}
    return {stat: {k: round(float(f(v)), 4) for k, v in values.items()}
            for stat, f in (("mean", np.mean), ("min", np.min), ("max", np.max))}


def classic_figures(name: str, windows, val_sources: list[AudioSource], sources: list[AudioSource], rttm: dict,
                    directory: Path) -> tuple[dict, Store]:
    """The diarize-then-link pipeline (weighter.baselines) on ``sources``: its distance threshold
    calibrated on ``val_sources``, its sets in a new store at ``directory``, clustered and scored
    like the Weighter's. Returns the figures and the store."""
    import time

    from weighter.baselines import calibrate_distance, classic_set

    threshold, val_acc = calibrate_distance([(s.path, s.likes) for s in val_sources], windows)
    started = time.perf_counter()
    sets = [classic_set(s.path, windows, threshold, name) for s in sources]
    seconds = time.perf_counter() - started
    store = Store(directory, create=True)
    with store.writing():
        store.apply([(s, f"{name}-{i}") for i, s in enumerate(sets)])
    figures = clustered_figures(store, sources, rttm)
    return figures | {"distance_threshold": threshold, "validation_count_accuracy": round(val_acc, 4),
                      "x_realtime": round(sum(s.duration for s in sets) / seconds, 1)}, store

