"""What the score normalisation (weighter/scoring.py) gains, with which cohort and top share.

Mixes *validation* corpora (the split that chooses settings; the held-out one only when asked
with --split heldout, to report), stores them with the shipped model, and prints file
retrieval mAP with raw cosines, normalised against the model's score cohort (training
voices) at several top shares (s-norm, and the cohort mean alone without the spread), and
normalised against the corpus itself (adaptive s-norm:
each slot's best 10% of cosines to the other files' slots). Then the real-speech check of
benchmarks/real_speech.py (one real man in 8 of 16 files): precision@7 under each scoring.

    python benchmarks/score_norm.py [--split validation] [--files 150 400] [--seed 107]
"""

import argparse
import contextlib
import json
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np

import weighter.scoring as scoring
from common import corpus_truth, indexed_store, mixed_corpus
from weighter.corpus import BankSpec, open_or_build_bank
from weighter.embedder import Embedder
from weighter.evaluation import (active_vectors, best_per_file, file_scores, mean_average_precision,
                                 retrieval_map, shared_likes, store_items)

SHARES = (0.02, 0.05, 0.1, 0.2)
MEAN_ONLY_SHARES = (0.05, 0.2)  # the cohort mean subtracted, no division by the spread


@contextlib.contextmanager
def mean_only(on: bool):
    """With ``on``, every spread is 1 (score = cos - the two sides' mean cohort cosine, averaged)."""
    def stats(cosines, top, compiled=True):
        mean, spread = top_stats(cosines, top, compiled)
        return mean, np.ones_like(spread)

    top_stats = scoring.top_stats
    with mock.patch.object(scoring, "top_stats", stats) if on else contextlib.nullcontext():
        yield


def variants(cohort: np.ndarray):
    """(name, Cohort, mean-only) of every cohort scoring compared."""
    for share in SHARES:
        yield f"model_cohort_{share}", scoring.Cohort(cohort, share), False
    for share in MEAN_ONLY_SHARES:
        yield f"model_cohort_mean_only_{share}", scoring.Cohort(cohort, share), True


def corpus_cohort_scores(items) -> tuple[np.ndarray, np.ndarray]:
    """File scores (F, F) and relevance with the corpus as the cohort: each slot's best 10% of
    cosines to the active slots of the other files."""
    v, counts = active_vectors(items, 0.5)
    owner = np.repeat(np.arange(len(items)), counts)
    sims = v @ v.T
    other = np.where(owner[:, None] != owner[None, :], sims, -np.inf)
    top = max(2, int(round(0.1 * len(v))))
    mean, spread = scoring.top_stats(np.ascontiguousarray(other, np.float32), top)
    norm = scoring.normalised(sims, mean[:, None], spread[:, None], mean[None, :], spread[None, :])
    return best_per_file(norm, counts), shared_likes(items)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--split", default="validation")
    parser.add_argument("--files", type=int, nargs="+", default=[150, 400])
    parser.add_argument("--seed", type=int, default=107, help="corpus seed of the first size; +1 for each next")
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    bank = open_or_build_bank(BankSpec(), progress=False)
    embedder = Embedder.load(args.model)
    if embedder.score_cohort is None:
        raise SystemExit(f"{embedder.model_id} carries no score cohort (weighter calibrate adds one)")
    cohort = embedder.score_cohort.vectors
    for i, files in enumerate(args.files):
        with tempfile.TemporaryDirectory() as tmp:
            sources, _ = corpus_truth(mixed_corpus(bank, Path(tmp) / "corpus", args.split, files, args.seed + i))
            items = store_items(indexed_store(embedder, sources, Path(tmp) / "store"), sources)[0]
        row = {"split": args.split, "files": files, "cohort_slots": len(cohort),
               "map_cosine": round(retrieval_map(items, 0.5), 4)}
        for name, variant, plain_mean in variants(cohort):
            with mean_only(plain_mean):
                row[f"map_{name}"] = round(retrieval_map(items, 0.5, variant), 4)
        row["map_corpus_cohort_0.1"] = round(mean_average_precision(*corpus_cohort_scores(items)), 4)
        print(json.dumps(row), flush=True)

    from real_speech import build

    with tempfile.TemporaryDirectory() as tmp:
        sources = build(Path(tmp))
        items = store_items(indexed_store(embedder, sources, Path(tmp) / "store"), sources)[0]
    man = [i for i, s in enumerate(sources) if "alsa-real-man" in s.likes]

    def precision_at_7(scores):
        return round(float(np.mean([np.mean([t in man for t in np.argsort(-scores[q])[:7]]) for q in man])), 4)

    row = {"real_speech_files": len(sources), "real_man_in": len(man),
           "precision@7_cosine": precision_at_7(file_scores(items, 0.5)[0])}
    for name, variant, plain_mean in variants(cohort):
        with mean_only(plain_mean):
            row[f"precision@7_{name}"] = precision_at_7(file_scores(items, 0.5, cohort=variant)[0])
    row["precision@7_corpus_cohort_0.1"] = precision_at_7(corpus_cohort_scores(items)[0])
    print(json.dumps(row))

if __name__ == "__main__":
    main()
