"""Set-to-set "like" retrieval: which stored files share a like with this one, and where.

Each active query slot searches its nearest stored slots in FAISS; the hits are grouped by
file and each file scores the best cosine over its (query slot, stored slot) pairs. Flat
search finds every pair that can matter, with exact cosines: the exact set-to-set score. IVF
and HNSW (float32 or float16 vectors, cosines within 1e-4) may miss a weak file's best pair,
so a weak file may score a little low, never high; with 8-bit or product-quantised vectors
every candidate file is re-scored exactly from SQLite. The
matched pair names the slots, and their weightings give the time spans where the like is
heard in both files.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from weighter.embedding_set import EmbeddingSet, spans
from weighter.index.store import Store


@dataclass
class Match:
    file: str
    score: float  # best cosine over slot pairs, in [-1, 1]
    probability: float | None  # calibrated P(shares a like), from the model's validation data
    query_slot: int
    stored_slot: int
    query_spans: list[tuple[float, float]]  # seconds, where the like is heard in the query
    stored_spans: list[tuple[float, float]]  # seconds, where it is heard in the stored file


def query_store(store: Store, query: EmbeddingSet, k: int = 10, slot: int | None = None,
                exclude_self: bool = True) -> list[Match]:
    if slot is not None:
        if not 0 <= slot < len(query.confidence):
            raise ValueError(f"--slot {slot}: the query has slots 0 to {len(query.confidence) - 1}")
        slots = np.array([slot])
    else:
        slots = np.flatnonzero(query.active)
        if not len(slots):
            slots = np.array([int(np.argmax(query.confidence))])
    vectors = query.embeddings[slots]  # (Q, E)
    total = store.vector_count()
    if total == 0:
        return []
    # Each stored file has at most max_slots vectors, so the top (k + 1) * max_slots hits of a
    # query slot hold its k best distinct files other than the query's own: the file ranking
    # below is then the exact set-to-set ranking for that index's recall.
    wanted = (k + int(exclude_self)) * store.max_slots()
    scores, ids = store.search(vectors, min(total, max(wanted, 32)))  # (Q, K) each
    files, stored_slots = store.owners(ids)  # (Q, K) each: vector ids encode them
    own = store.file_id(query.path) if exclude_self else None
    keep = (ids >= 0) & (files != (-1 if own is None else own))
    rows = np.nonzero(keep)[0]
    files, scores, stored_slots = files[keep], scores[keep], stored_slots[keep]
    order = np.argsort(-scores, kind="stable")
    _, first = np.unique(files[order], return_index=True)
    pick = order[first]  # each file's best hit, files in ascending id order
    if store.exact_scores():
        pick = pick[np.argsort(-scores[pick], kind="stable")[:k]]
        top = [(int(files[i]), (float(scores[i]), int(rows[i]), int(stored_slots[i]))) for i in pick]
    else:  # compressed vectors (PQ, SQ): re-score every candidate file exactly
        best = _rescore(store, vectors, files[pick].tolist())
        top = sorted(best.items(), key=lambda kv: -kv[1][0])[:k]
    calibration = json.loads(store.meta("pair_calibration") or "null")
    timelines = store.slot_timelines([store.slot_id(f, s_slot) for f, (_, _, s_slot) in top])
    query_spans = {q: query.spans(int(slots[q])) for q in {q for _, (_, q, _) in top}}
    matches = []
    for file_id, (score, q, s_slot) in top:
        path, duration, weighting, rate = timelines[store.slot_id(file_id, s_slot)]
        prob = None
        if calibration:
            a, b = calibration
            prob = round(float(1 / (1 + np.exp(-(a * score + b)))), 4)
        matches.append(Match(path, round(score, 4), prob, int(slots[q]), int(s_slot), query_spans[q],
                             spans(weighting, rate, duration)))
    return matches


def _rescore(store: Store, vectors: np.ndarray, file_ids: list[int]) -> dict:
    """Exact best cosine over (query slot, stored active slot) pairs for every candidate file."""
    file_of, slot_of, emb = store.active_slots_of(file_ids)
    sims = vectors @ emb.T  # (Q, S)
    out: dict[int, tuple[float, int, int]] = {}
    for col in range(len(file_of)):
        q = int(np.argmax(sims[:, col]))
        f = int(file_of[col])
        if f not in out or sims[q, col] > out[f][0]:
            out[f] = (float(sims[q, col]), q, int(slot_of[col]))
    return out


def matches_json(query: EmbeddingSet, matches: list[Match]) -> dict:
    return {"query": {"file": query.path, "duration": round(query.duration, 3),
                      "active_slots": [int(n) for n in np.flatnonzero(query.active)]},
            "results": [asdict(m) for m in matches]}
