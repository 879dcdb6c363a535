"""Store build time, peak memory, query latency and recall at 100k and 1M vectors.

Synthetic unit vectors stand in for slot embeddings at scale (clustered, like speakers: 2000
centres plus noise). Build = one atomic ``Store.apply`` of all sets (SQLite rows, FAISS
index, every slot's statistics against a score cohort of 1000 vectors). Query =
``query_store`` for one file of 8 active slots (the query slots' statistics, FAISS search,
normalised scores, grouping by file, spans of the 10 best), timed whole and its FAISS search
alone. Recall@10 of the FAISS search
against exact (brute-force) search. Then the removal of one file (an atomic ``apply``: SQLite
rows, FAISS update, the FAISS file written again).

    python benchmarks/index_speed.py --vectors 100000 1000000
"""

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from weighter.embedding_set import EmbeddingSet
from weighter.index import Store, query_store
from weighter.index.query import search_depth
from weighter.scoring import COHORT_SIZE

DIM = 256
SLOTS = 8


def make_vectors(n: int, rng) -> np.ndarray:
    centres = rng.normal(size=(2000, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, 2000, n)] + rng.normal(0, 0.06, (n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def sets_from(vectors: np.ndarray):
    for f in range(len(vectors) // SLOTS):
        emb = vectors[f * SLOTS:(f + 1) * SLOTS]
        yield (EmbeddingSet(f"/bench/f{f:07d}.flac", emb, np.ones(SLOTS, np.float32), np.ones(SLOTS, bool),
                            np.zeros((SLOTS, 4), np.float32), 10.0, 0.4, "bench"), f"h{f}")


def run(n: int, queries: int = 200) -> dict:
    import faiss

    rng = np.random.default_rng(0)
    vectors = make_vectors(n, rng)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "s", create=True)
        started = time.perf_counter()
        with store.writing():  # with a score cohort as large as a model file carries: queries normalise
            store.apply(list(sets_from(vectors)), score_cohort=make_vectors(COHORT_SIZE, np.random.default_rng(2)))
        build = time.perf_counter() - started
        info = store.info()
        qs = make_vectors(queries * SLOTS, np.random.default_rng(1))
        latencies = []
        for q in range(queries):
            emb = qs[q * SLOTS:(q + 1) * SLOTS]
            qset = EmbeddingSet("/bench/query.flac", emb, np.ones(SLOTS, np.float32), np.ones(SLOTS, bool),
                                np.zeros((SLOTS, 4), np.float32), 10.0, 0.4, "bench")
            t = time.perf_counter()
            query_store(store, qset, k=10)
            latencies.append((time.perf_counter() - t) * 1000)
        search_only = []  # the FAISS search alone, as query_store calls it
        wanted = search_depth(store, 10)
        for q in range(queries):
            t = time.perf_counter()
            store.search(qs[q * SLOTS:(q + 1) * SLOTS], wanted)
            search_only.append((time.perf_counter() - t) * 1000)
        exact = faiss.IndexFlatIP(DIM)
        exact.add(vectors)
        probe = qs[: queries]
        _, truth = exact.search(probe, 10)
        _, found = store.search(probe, 10)
        ids = np.array([r[0] for r in store.db.execute("SELECT id FROM slots WHERE active = 1 ORDER BY id")])
        found_rows = np.searchsorted(ids, found)  # ids follow insertion order: row i of vectors -> ids[i]
        recall = float(np.mean([len(set(found_rows[i]) & set(truth[i])) / 10 for i in range(len(probe))]))
        started = time.perf_counter()
        with store.writing():
            store.apply([], ["/bench/f0000000.flac"])
        remove = time.perf_counter() - started
    return {"vectors": n, "index_type": info["index_type"], "build_s": round(build, 1), "remove_one_file_s": round(remove, 1),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "query_p50_ms": round(float(np.percentile(latencies, 50)), 2),
            "query_p99_ms": round(float(np.percentile(latencies, 99)), 2),
            "faiss_search_p50_ms": round(float(np.percentile(search_only, 50)), 2), "recall@10": round(recall, 4),
            "query_slots": SLOTS, "scoring": info["scoring"]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--vectors", type=int, nargs="+", default=[100_000])
    args = parser.parse_args()
    for n in args.vectors:
        print(json.dumps(run(n)), flush=True)
