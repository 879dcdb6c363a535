"""Set-to-set "like" retrieval: which stored files share a like with this one, and where.

Each active query slot searches its nearest stored slots in FAISS (``fanout`` x k of them);
the hits are grouped by file; every candidate file is then re-scored exactly: the best cosine
over all pairs (query slot, stored active slot). The matched pair names the slots, and their
weightings give the time spans where the like is heard in both files.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from weighter.embedding_set import EmbeddingSet
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
                fanout: int = 8, exclude_self: bool = True) -> list[Match]:
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
    _, ids = store.search(vectors, min(total, max(fanout * k, 64)))
    own = store.file_id(query.path) if exclude_self else None
    candidates = {f for f in store.files_of(ids.ravel()).values() if f != own}
    if not candidates:
        return []
    slot_rows = store.active_slots_of(sorted(candidates))  # one query: (file ids, slot numbers, embeddings)
    file_of, slot_of, emb = slot_rows
    sims = vectors @ emb.T  # (Q, S) exact cosines against every active slot of every candidate
    best_per_slot = sims.max(0)  # (S,)
    which_query = sims.argmax(0)
    order = np.lexsort((-best_per_slot, file_of))  # by file, best first
    first = order[np.r_[True, file_of[order][1:] != file_of[order][:-1]]]  # best slot of each file
    first = first[np.argsort(-best_per_slot[first], kind="stable")][:k]
    calibration = json.loads(store.meta("pair_calibration") or "null")
    matches = []
    for row in first:
        stored = store.embedding_set(int(file_of[row]))
        score = float(best_per_slot[row])
        prob = None
        if calibration:
            a, b = calibration
            prob = round(float(1 / (1 + np.exp(-(a * score + b)))), 4)
        q_slot, s_slot = int(slots[which_query[row]]), int(slot_of[row])
        matches.append(Match(stored.path, round(score, 4), prob, q_slot, s_slot, query.spans(q_slot),
                             stored.spans(s_slot)))
    return matches


def matches_json(query: EmbeddingSet, matches: list[Match]) -> dict:
    return {"query": {"file": query.path, "duration": round(query.duration, 3),
                      "active_slots": [int(n) for n in np.flatnonzero(query.active)]},
            "results": [asdict(m) for m in matches]}
