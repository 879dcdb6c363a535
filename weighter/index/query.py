"""Set-to-set "like" retrieval: which stored files share a like with this one, and where.

Each active query slot searches its nearest stored slots in FAISS; the hits are grouped by
file and each file scores the best over its (query slot, stored slot) pairs of the pair's
cosine normalised against the model's score cohort (``weighter.scoring``; the raw cosine for
a model without one), among the nearest stored slots that hold the k best files by cosine (a
search twice as deep found the same 10 best files for all of 200 queries at 1M vectors, 0.5
ms slower: benchmarks/index_speed.py's vectors). IVF and HNSW (float32 or float16 vectors,
cosines within 1e-4) may miss a weak file's best pair, so a weak file may score a
little low, never high; with 8-bit or product-quantised vectors the RESCORE_FILES * k best
candidate files by code are re-scored exactly from SQLite. The matched pair names the slots,
and their weightings give the time spans where the like is heard in both files.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np

from weighter.embedding_set import EmbeddingSet, spans
from weighter.index.pair_model import store_calibration
from weighter.index.store import SLOT_BITS, Store
from weighter.scoring import _ranking, cohort_stats, normalised


# Compressed codes: the RESCORE_FILES * k best files by code are re-scored from SQLite (each
# all its active slots): every candidate file, about 700 at 1M slots, took 0.5 s a query. With
# 8-bit codes at 1M slots, 2 gave the same 10 results as 8 for 399 of 400 query files (1: 220),
# each file more about 0.2 ms (benchmarks/index_speed.py's rescore_agreement).
RESCORE_FILES = 2


@dataclass
class Match:
    """A stored file that shares a like with the query, and where it is heard in both.

    Attributes
    ----------
    file : str
        The stored file's path.
    score : float
        Its best slot-pair score: the pair's cosine normalised against the store's score
        cohort (the raw cosine for a model without one); larger is more alike.
    cosine : float
        That pair's cosine, in [-1, 1].
    probability : float or None
        Calibrated probability that the two files share a like (None for a model without
        calibration).
    query_slot, stored_slot : int
        The matched pair's slot numbers.
    query_spans, stored_spans : list of (float, float)
        Seconds where the like is heard in the query and in the stored file.
    group : int or None
        The group of the matched stored slot in the store's latest clustering run (``weighter
        cluster``; -1: an outlier there); None when the store was never clustered or the slot
        came after the run.
    speaker : str or None
        The name that group carries (``weighter.index.speakers``); None: an unnamed group,
        or none.
    """

    file: str
    score: float  # best slot-pair score: the cosine normalised against the store's cohort
    cosine: float  # that pair's cosine, in [-1, 1]
    probability: float | None  # calibrated P(shares a like), from the model's validation data
    query_slot: int
    stored_slot: int
    query_spans: list[tuple[float, float]]  # seconds, where the like is heard in the query
    stored_spans: list[tuple[float, float]]  # seconds, where it is heard in the stored file
    group: int | None = None  # the stored slot's group in the latest clustering run (-1: outlier)
    speaker: str | None = None  # the name that group carries, if any


def query_store(store: Store, query: EmbeddingSet, k: int = 10, slot: int | None = None,
                exclude_self: bool = True) -> list[Match]:
    """Stored files that share a like with ``query``, best first.

    Each active query slot searches its nearest stored slots in FAISS; a file scores its best
    (query slot, stored slot) pair.

    Parameters
    ----------
    store : Store
    query : EmbeddingSet
        The query file's set (``Embedder.embed``, or ``Store.embedding_set`` for a stored file).
    k : int, default 10
        How many files to return.
    slot : int or None
        Search with this query slot only; None: all active slots (the most confident one when
        none is active).
    exclude_self : bool, default True
        Leave out the query's own file when it is stored.

    Returns
    -------
    list of Match
        At most ``k``, by descending score; empty for an empty store.

    Raises
    ------
    ValueError
        ``slot`` is not a slot of the query.

    Examples
    --------
    >>> from weighter import Embedder, Store, query_store
    >>> with Store("calls.store") as store:  # doctest: +SKIP
    ...     query = Embedder.load().embed(["new.flac"])[0]
    ...     for m in query_store(store, query, k=3):
    ...         print(f"{m.score:.2f} {m.file} {m.stored_spans}")
    5.31 calls/b.flac [(0.0, 4.2)]
    """
    with _one_thread(), store.snapshot():
        return _query(store, [query], k, [slot], exclude_self)[0]


def query_many(store: Store, queries: list[EmbeddingSet], k: int = 10, exclude_self: bool = True) -> list[list[Match]]:
    """``query_store`` for many query files at once: one FAISS search for all their slots.

    Parameters
    ----------
    store : Store
    queries : list of EmbeddingSet
        Each searches with its active slots (the most confident one when none is active).
    k : int, default 10
        How many files to return per query.
    exclude_self : bool, default True
        Leave out each query's own file when it is stored.

    Returns
    -------
    list of list of Match
        One ranking per query, in order: exactly what ``query_store`` returns for it.

    Examples
    --------
    >>> from weighter import Store, query_many
    >>> with Store("calls.store") as store:  # doctest: +SKIP
    ...     stored = [store.embedding_set(i) for i in (1, 2, 3)]
    ...     rankings = query_many(store, stored, k=5)
    >>> [len(r) for r in rankings]  # doctest: +SKIP
    [5, 5, 5]
    """
    with _one_thread(), store.snapshot():
        return _query(store, list(queries), k, [None] * len(queries), exclude_self)


_POOLS = None  # (modules imported, threadpoolctl's view of the BLAS and OpenMP pools) at the last scan


def _one_thread():
    """BLAS (score statistics, re-scoring) and OpenMP (FAISS) on one thread while a query runs.

    A query's products are small (8 x 256 by 1000 x 256), so threads save little. When another
    process holds a core, a pool thread is descheduled and the others wait for it: p99 grows
    from about 5 ms to 36 ms at 200k slots (benchmarks/index_speed.py --busy 1; docs/figures.md).
    The limit is the process's: a program querying from several threads at once (``weighter
    serve``) sets OMP_NUM_THREADS=1 and OPENBLAS_NUM_THREADS=1 before numpy and FAISS load."""
    global _POOLS
    from threadpoolctl import ThreadpoolController

    modules = len(sys.modules)  # an import since the last scan may have loaded another BLAS or OpenMP
    if _POOLS is None or _POOLS[0] != modules:
        _POOLS = (modules, ThreadpoolController().lib_controllers)
    return _limited(_POOLS[1])


@contextmanager
def _limited(pools: list):
    """Each of threadpoolctl's ``pools`` on one thread inside the block, as it was after it
    (what ``ThreadpoolController.limit`` does, without its report of every library: 6 against
    14 us a query)."""
    before = [pool.num_threads for pool in pools]
    for pool, threads in zip(pools, before):
        if threads != 1:
            pool.set_num_threads(1)
    try:
        yield
    finally:
        for pool, threads in zip(pools, before):
            if threads != 1:
                pool.set_num_threads(threads)


_BESIDE = None  # (process id, the thread that computes a query's cohort statistics)


def _beside() -> ThreadPoolExecutor:
    """One thread that works beside a query's FAISS search, which releases the GIL: the query
    slots' cohort statistics (a product with 1000 cohort slots read from memory after the search
    evicted them from the caches, 0.1-0.2 ms) cost nothing in wall time on a second core. The
    query takes them only if they are ready when its search ends, else computes them itself:
    with another process on that core the thread may wait a whole time slice for it (p99 11.7
    ms against 3.2 quiet at 1M slots when the query waited for it). One per process: a forked
    child makes its own."""
    global _BESIDE
    if _BESIDE is None or _BESIDE[0] != os.getpid():
        _BESIDE = (os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="weighter-cohort"))
    return _BESIDE[1]


def _stats_beside(vectors: np.ndarray, cohort) -> tuple[np.ndarray, np.ndarray]:
    """``cohort_stats`` on the thread beside the search, its BLAS and OpenMP on one thread too."""
    with _one_thread():
        return cohort_stats(vectors, cohort)


def _search_slots(query: EmbeddingSet, slot: int | None) -> np.ndarray:
    """The query slots that search: ``slot``, else the active ones, else the most confident."""
    if slot is not None:
        if not 0 <= slot < len(query.confidence):
            raise ValueError(f"slot {slot}: the query has slots 0 to {len(query.confidence) - 1}")
        return np.array([slot])
    slots = np.flatnonzero(query.active)
    return slots if len(slots) else np.array([int(np.argmax(query.confidence))])


def _query(store: Store, queries: list[EmbeddingSet], k: int, slot_choice: list[int | None],
           exclude_self: bool) -> list[list[Match]]:
    """Rankings of ``queries`` (``slot_choice``: a slot per query, or None) without the thread limit."""
    slots = [_search_slots(q, s) for q, s in zip(queries, slot_choice)]
    if not queries:
        return []
    if store.vector_count() == 0:
        return [[] for _ in queries]
    vectors = np.concatenate([q.embeddings[s] for q, s in zip(queries, slots)])  # (sum Q, E)
    cohort = store.score_cohort()  # None: raw cosines
    stats = None if cohort is None else _beside().submit(_stats_beside, vectors, cohort)  # while FAISS searches
    cosines, ids = store.search(vectors, search_depth(store, k, exclude_self))  # (sum Q, K) each
    if stats is not None:
        if stats.done():
            stats = stats.result()
        else:  # never wait for the other thread: another process may hold its core
            stats.cancel()
            stats = cohort_stats(vectors, cohort)
    calibration = store_calibration(store)  # score -> p at the store's base rate; None: no p
    bounds = np.cumsum([0] + [len(s) for s in slots])
    rankings = []
    for query, query_slots, lo, hi in zip(queries, slots, bounds[:-1], bounds[1:]):
        part = None if stats is None else (stats[0][lo:hi], stats[1][lo:hi])
        rankings.append(_rank(store, query, query_slots, vectors[lo:hi], part, cosines[lo:hi], ids[lo:hi], k,
                              exclude_self, calibration))
    return rankings


def _rank(store: Store, query: EmbeddingSet, slots: np.ndarray, vectors: np.ndarray, query_stats,
          cosines: np.ndarray, ids: np.ndarray, k: int, exclude_self: bool, calibration) -> list[Match]:
    """One query's files from its slots' FAISS hits (``cosines``, ``ids``: (Q, K)), best first."""
    from weighter.index import speakers  # it searches through this module

    own = store.file_id(query.path) if exclude_self else None
    if store.exact_scores():
        top = file_hits(store, cosines, ids, query_stats, own, k)
    else:  # compressed vectors (PQ, 8-bit): re-score the best candidate files by code exactly
        candidates = file_hits(store, cosines, ids, query_stats, own, RESCORE_FILES * k)
        top = _rescore(store, vectors, query_stats, [hit[0] for hit in candidates])[:k]
    run = store.run_id()
    names = speakers.group_names(store, run) if run is not None else {}
    slot_ids = [store.slot_id(f, s_slot) for f, _, _, _, s_slot in top]
    details = store.slot_timelines(slot_ids, run)
    query_spans = {q: query.spans(int(slots[q])) for q in {q for _, _, _, q, _ in top}}
    probs = None if calibration is None else calibration.probability([score for _, score, _, _, _ in top])
    matches = []
    for i, ((_, score, cosine, q, s_slot), slot_id) in enumerate(zip(top, slot_ids)):
        path, duration, weighting, rate, *group = details[slot_id]
        group = group[0] if group else None
        prob = None if probs is None else round(float(probs[i]), 4)
        matches.append(Match(path, round(score, 4), round(cosine, 4), prob, int(slots[q]), int(s_slot),
                             query_spans[q], spans(weighting, rate, duration), group, names.get(group)))
    return matches


def search_depth(store: Store, k: int, exclude_self: bool = True) -> int:
    """Nearest stored slots each query slot asks FAISS for. Each stored file has at most
    max_slots vectors, so the top (k + 1) * max_slots hits of a query slot hold its k best
    distinct files other than the query's own by cosine: the file ranking by cosine is then
    the exact set-to-set ranking for that index's recall."""
    return min(store.vector_count(), max((k + int(exclude_self)) * store.max_slots(), 32))


def _scores(store: Store, cosines: np.ndarray, query_stats, rows: np.ndarray, vector_ids: np.ndarray) -> np.ndarray:
    """Pair scores of hits (query slot ``rows``, stored ``vector_ids``): their cosines,
    normalised where the store has a cohort."""
    if query_stats is None:
        return cosines
    mean, spread = store.slot_stats(vector_ids)
    return normalised(cosines, query_stats[0][rows], query_stats[1][rows], mean, spread)


def file_hits(store: Store, cosines: np.ndarray, ids: np.ndarray, query_stats, exclude: int | None, want: int,
              compiled: bool = True) -> list[tuple[int, float, float, int, int]]:
    """Each stored file's best hit among one query's FAISS hits, the best ``want`` files.

    Parameters
    ----------
    store : Store
        Whose slot statistics normalise the hits' cosines.
    cosines, ids : ndarray of shape (Q, K)
        The query slots' FAISS hits (``Store.search``): cosines (float32) and vector ids (int64,
        -1 where FAISS found fewer).
    query_stats : (ndarray, ndarray) or None
        The query slots' (mean, spread) against the score cohort, (Q,) each; None: raw cosines.
    exclude : int or None
        A file id left out (the query's own).
    want : int
        At most this many files.
    compiled : bool, default True
        Use weighter/_ranking.c where it was built; False: numpy (the reference).

    Returns
    -------
    list of (file id, score, cosine, query slot row, stored slot)
        By descending score, then ascending file id.

    Examples
    --------
    >>> cosines, ids = store.search(query.embeddings, 88)  # doctest: +SKIP
    >>> file_hits(store, cosines, ids, store.query_stats(query.embeddings), None, 3)  # doctest: +SKIP
    [(12, 6.1, 0.83, 0, 1), (40, 2.3, 0.61, 2, 0), (7, 0.4, 0.42, 1, 3)]
    """
    table = None if query_stats is None else store.stats_table()
    if compiled and _ranking is not None and (query_stats is None or table is not None):
        stats = (None, None) if query_stats is None else tuple(np.ascontiguousarray(a, np.float32) for a in query_stats)
        return _ranking.best_files(np.ascontiguousarray(cosines, np.float32), np.ascontiguousarray(ids, np.int64),
                                   *stats, table, -1 if exclude is None else int(exclude),
                                   int(want), SLOT_BITS)
    keep = ids >= 0  # (Q, K): FAISS pads with -1 where it found fewer
    if exclude is not None:
        keep &= ids >> SLOT_BITS != exclude
    rows = np.nonzero(keep)[0]  # (H,) each hit's query slot row
    hit_ids, cosines = ids[keep], cosines[keep]
    files, stored_slots = store.owners(hit_ids)  # vector ids encode them
    scores = _scores(store, cosines, query_stats, rows, hit_ids)
    pick = _each_files_best(files, scores)
    pick = pick[np.argsort(-scores[pick], kind="stable")[:want]]
    return list(zip(files[pick].tolist(), scores[pick].tolist(), cosines[pick].tolist(), rows[pick].tolist(),
                    stored_slots[pick].tolist()))


def _each_files_best(files: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The index of each file's best score (the first of equals), files in ascending id order:
    one stable sort by file, then best first."""
    order = np.lexsort((-scores, files))
    ordered = files[order]
    return np.concatenate([order[:1], order[np.flatnonzero(ordered[1:] != ordered[:-1]) + 1]])


def _rescore(store: Store, vectors: np.ndarray, query_stats, file_ids: list[int]) -> list[tuple]:
    """Exact best pair score over (query slot, stored active slot) pairs for every candidate
    file: (file id, score, cosine, query slot row, stored slot), by descending score."""
    file_of, slot_of, emb = store.active_slots_of(file_ids)
    sims = vectors @ emb.T  # (Q, S)
    q_rows, cols = np.indices(sims.shape).reshape(2, -1)
    vector_ids = store.slot_ids(file_of[cols], slot_of[cols])
    scores = _scores(store, sims.ravel(), query_stats, q_rows, vector_ids).reshape(sims.shape)
    return best_pairs(file_of, slot_of, scores, sims)


def best_pairs(file_of: np.ndarray, slot_of: np.ndarray, scores: np.ndarray, sims: np.ndarray) -> list[tuple]:
    """Each file's best (query slot, stored slot) pair from a full score matrix.

    Parameters
    ----------
    file_of, slot_of : ndarray of shape (S,)
        The file and slot number of each stored slot (column).
    scores, sims : ndarray of shape (Q, S)
        Each pair's score and cosine.

    Returns
    -------
    list of (file id, score, cosine, query slot row, stored slot)
        One per file, by descending score; on a tie the file seen first among the columns
        comes first, and within a file the first column and, in it, the first query row.

    Examples
    --------
    >>> best_pairs(np.array([5, 5, 2]), np.array([0, 1, 0]), np.array([[0.1, 0.7, 0.3]]), np.array([[0.1, 0.7, 0.3]]))
    [(5, 0.7, 0.7, 0, 1), (2, 0.3, 0.3, 0, 0)]
    """
    if not len(file_of):
        return []
    cols = np.arange(len(file_of))
    rows = np.argmax(scores, axis=0)  # (S,) each column's best query row, the first of equals
    score, cosine = scores[rows, cols], sims[rows, cols]
    best = _each_files_best(file_of, score)  # (F,) each file's best column
    best = best[np.argsort(np.unique(file_of, return_index=True)[1], kind="stable")]  # files as first seen
    best = best[np.argsort(-score[best], kind="stable")]
    return [(int(file_of[c]), float(score[c]), float(cosine[c]), int(rows[c]), int(slot_of[c])) for c in best]


def matches_json(query: EmbeddingSet, matches: list[Match]) -> dict:
    """A query's results as JSON-ready values (what ``weighter query --json`` prints).

    Parameters
    ----------
    query : EmbeddingSet
    matches : list of Match
        As ``query_store`` returned them.

    Returns
    -------
    dict
        ``{"query": {"file", "duration", "active_slots"}, "results": [Match fields, ...]}``.
    """
    return {"query": {"file": query.path, "duration": round(query.duration, 3),
                      "active_slots": [int(n) for n in np.flatnonzero(query.active)]},
            "results": [asdict(m) for m in matches]}
