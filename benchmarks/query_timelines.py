"""What a query costs beyond its FAISS search as the stored files grow long.

A query returns, for each of its 10 results, where the like is heard in both files: the
matched slots' weightings over time (10 Hz) turned into spans. `index_speed.py`'s synthetic
files carry 4-value timelines; recordings of calls and meetings carry 36,000 values an hour.
For each length in ``--seconds``, a store of ``--files`` files of 8 active slots whose
weightings switch between speech (0.9) and silence (0.05) every 2-20 s, and as many query files
alike; each query is timed whole (``query_store``, k=10), then its FAISS search alone on the one
thread a query searches on, side by side. Prints one JSON line per length: p50 of both, their
difference (what the query adds), and the mean spans per result.

    python benchmarks/query_timelines.py                       # 10 s, 5 min and 30 min files
    python benchmarks/query_timelines.py --seconds 3600 --files 1000
"""

import argparse
import json
import tempfile
import time

import numpy as np

from weighter.embedding_set import EmbeddingSet
from weighter.index import Store, query_store
from weighter.index.query import _one_thread, search_depth
from weighter.scoring import COHORT_SIZE, Cohort

DIM, SLOTS, RATE = 256, 8, 10.0  # embedding size, slots per file, timeline Hz


def vectors(n: int, rng, centres: np.ndarray) -> np.ndarray:
    """n unit vectors, each near one of ``centres``."""
    x = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 0.06, (n, DIM)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def weightings(rng, length: int) -> np.ndarray:
    """(SLOTS, length) weightings: runs of 2-20 s alternating between 0.9 and 0.05."""
    w = np.empty((SLOTS, length), np.float32)
    for slot in range(SLOTS):
        t, on = 0, bool(rng.integers(2))
        while t < length:
            n = int(rng.integers(20, 200))
            w[slot, t:t + n] = 0.9 if on else 0.05
            t, on = t + n, not on
    return w


def file_set(path: str, emb: np.ndarray, rng, seconds: float) -> EmbeddingSet:
    """A file of ``seconds`` with SLOTS active slots ``emb`` (SLOTS, DIM)."""
    return EmbeddingSet(path, emb, np.full(SLOTS, 0.9, np.float32), np.ones(SLOTS, bool),
                        weightings(rng, max(1, int(seconds * RATE))), RATE, float(seconds), "bench")


def run(seconds: float, files: int, queries: int, tmp: str) -> dict:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2000, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    stored = vectors(files * SLOTS, rng, centres)
    directory = f"{tmp}/s{int(seconds)}"
    with Store(directory, create=True) as store, store.writing():
        store.apply([(file_set(f"/bench/f{f:06d}.flac", stored[f * SLOTS:(f + 1) * SLOTS], rng, seconds), f"h{f}")
                     for f in range(files)],
                    score_cohort=Cohort(vectors(COHORT_SIZE, np.random.default_rng(2), centres)))
    asked = vectors(queries * SLOTS, np.random.default_rng(3), centres)
    sets = [file_set("/bench/query.flac", asked[q * SLOTS:(q + 1) * SLOTS], rng, seconds) for q in range(queries)]
    whole, alone, spans = [], [], []
    with Store(directory, read_only=True) as store:  # as `weighter query` reads
        depth = search_depth(store, 10)
        for qset in sets[:20]:  # load the index and warm the path
            query_store(store, qset)
        for qset in sets:
            t = time.perf_counter()
            matches = query_store(store, qset, k=10)
            whole.append((time.perf_counter() - t) * 1000)
            with _one_thread():
                t = time.perf_counter()
                store.search(qset.embeddings, depth)
                alone.append((time.perf_counter() - t) * 1000)
            spans += [len(m.stored_spans) for m in matches]
    p50, faiss_p50 = float(np.percentile(whole, 50)), float(np.percentile(alone, 50))
    return {"seconds": seconds, "files": files, "slots": files * SLOTS, "query_p50_ms": round(p50, 2),
            "faiss_one_thread_p50_ms": round(faiss_p50, 2), "query_minus_faiss_ms": round(p50 - faiss_p50, 2),
            "spans_per_result": round(float(np.mean(spans)), 1)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[10, 300, 1800],
                        help="length of every stored and query file, one store per value")
    parser.add_argument("--files", type=int, default=2000, help="files per store (8 slots each)")
    parser.add_argument("--queries", type=int, default=400, help="query files per store")
    parser.add_argument("--tmp", default=None, help="folder for the stores (default: the system's)")
    args = parser.parse_args()
    for seconds in args.seconds:
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            print(json.dumps(run(seconds, args.files, args.queries, tmp)), flush=True)
