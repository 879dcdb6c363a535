"""Quality measures shared by training (validation), benchmarks and ``weighter evaluate``.

All work on embedding sets plus the truth: file-level likes (always) and frame-level activity
(synthetic corpora, or any corpus with an RTTM).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SetTruth:
    embeddings: np.ndarray  # (N, E) L2-normalised
    confidence: np.ndarray  # (N,)
    x: np.ndarray  # (N, T) slot weightings X on some frame grid
    likes: tuple[str, ...]
    activity: np.ndarray | None = None  # (len(likes), T) bool on the same grid, when known


def calibrate_threshold(items: list[SetTruth], grid=np.linspace(0.05, 0.95, 91)) -> tuple[float, float]:
    """The confidence threshold that best counts the likes per file: (threshold, accuracy)."""
    best = (0.5, -1.0)
    for thr in grid:
        acc = float(np.mean([(it.confidence >= thr).sum() == len(it.likes) for it in items]))
        if acc > best[1] + 1e-9:
            best = (float(thr), acc)
    return best


def active_slots(item: SetTruth, threshold: float) -> np.ndarray:
    active = np.flatnonzero(item.confidence >= threshold)
    return active if len(active) else np.array([int(np.argmax(item.confidence))])


def retrieval_map(items: list[SetTruth], threshold: float) -> float:
    """File retrieval mAP: score(a, b) = best cosine between their active slots; relevant = a
    shared like. Averaged over queries that have at least one relevant file."""
    slots = [it.embeddings[active_slots(it, threshold)] for it in items]
    likes = [set(it.likes) for it in items]
    aps = []
    for q in range(len(items)):
        scores, relevant = [], []
        for f in range(len(items)):
            if f == q:
                continue
            scores.append(float((slots[q] @ slots[f].T).max()))
            relevant.append(bool(likes[q] & likes[f]))
        if not any(relevant):
            continue
        order = np.argsort(-np.array(scores), kind="stable")
        rel = np.array(relevant)[order]
        hits = np.cumsum(rel)
        aps.append(float((hits[rel] / (np.flatnonzero(rel) + 1)).mean()))
    return float(np.mean(aps)) if aps else float("nan")


def slot_speakers(item: SetTruth, threshold: float) -> list[tuple[int, str]]:
    """Active slots mapped to the speaker whose activity their weighting overlaps most."""
    if item.activity is None or not len(item.likes):
        return []
    out = []
    for n in active_slots(item, threshold):
        t = min(item.x.shape[1], item.activity.shape[1])
        overlap = item.activity[:, :t].astype(np.float32) @ item.x[n, :t]
        out.append((int(n), item.likes[int(np.argmax(overlap))]))
    return out


def slot_eer(items: list[SetTruth], threshold: float) -> float:
    """Equal error rate of same- vs different-speaker over pairs of active slots of different files."""
    vectors, labels, owners = [], [], []
    for i, it in enumerate(items):
        for n, speaker in slot_speakers(it, threshold):
            vectors.append(it.embeddings[n])
            labels.append(speaker)
            owners.append(i)
    if len(vectors) < 3:
        return float("nan")
    v = np.stack(vectors)
    scores = v @ v.T
    labels, owners = np.array(labels), np.array(owners)
    iu = np.triu_indices(len(v), 1)
    keep = owners[iu[0]] != owners[iu[1]]
    s = scores[iu][keep]
    same = (labels[iu[0]] == labels[iu[1]])[keep]
    return equal_error_rate(s[same], s[~same])


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> float:
    if len(genuine) == 0 or len(impostor) == 0:
        return float("nan")
    thresholds = np.unique(np.concatenate([genuine, impostor]))
    g, i = np.sort(genuine), np.sort(impostor)
    frr = np.searchsorted(g, thresholds, side="left") / len(g)  # genuine below threshold
    far = 1 - np.searchsorted(i, thresholds, side="left") / len(i)  # impostors at or above
    k = int(np.argmin(np.abs(frr - far)))
    return float((frr[k] + far[k]) / 2)


def summarize(items: list[SetTruth], threshold: float | None = None) -> dict:
    """count accuracy (threshold calibrated here when None), retrieval mAP, slot EER."""
    if threshold is None:
        threshold, count_acc = calibrate_threshold(items)
    else:
        count_acc = float(np.mean([(it.confidence >= threshold).sum() == len(it.likes) for it in items]))
    return {"threshold": round(threshold, 3), "count_accuracy": round(count_acc, 4),
            "map": round(retrieval_map(items, threshold), 4), "slot_eer": round(slot_eer(items, threshold), 4),
            "files": len(items)}


def file_pair_scores(items: list[SetTruth], threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """For every pair of files: best cosine between active slots, and whether they share a like."""
    slots = [it.embeddings[active_slots(it, threshold)] for it in items]
    scores, same = [], []
    for a in range(len(items)):
        for b in range(a + 1, len(items)):
            scores.append(float((slots[a] @ slots[b].T).max()))
            same.append(bool(set(items[a].likes) & set(items[b].likes)))
    return np.array(scores), np.array(same)


def pair_calibration(items: list[SetTruth], threshold: float) -> list[float] | None:
    """Logistic fit P(two files share a like | best slot cosine) = sigmoid(a s + b), or None
    when the validation data has only one class."""
    from sklearn.linear_model import LogisticRegression

    scores, same = file_pair_scores(items, threshold)
    if len(set(same.tolist())) < 2:
        return None
    fit = LogisticRegression(C=100.0).fit(scores[:, None], same)
    return [round(float(fit.coef_[0, 0]), 4), round(float(fit.intercept_[0]), 4)]
