"""Splitting a slot that holds two voices.

A slot's embedding (pooling "windows") is the mass-weighted mean of 1.6 s window embeddings.
A like is one voice, so the windows a slot weighs should agree. When the model lets one slot
cover two speakers (the commonest counting error: four speakers counted as three), its
windows fall into two groups. ``split_mixed`` finds them (a weighted spherical 2-means over
the windows, in the model's own embedding space) and, when the two groups are unalike (cosine
below ``split_cosine``) and each carries at least ``min_share`` of the slot's mass, replaces
the slot by two: each embedded from its own windows, its weightings the slot's, shared out
frame by frame by the groups' mass in the windows covering that frame, its confidence the
slot's. A half that repeats another slot is then dropped by the usual duplicate merge (the
other kind of error: a slot straddling two voices that other slots already hold).
Both parameters are fitted on validation data by ``weighter calibrate``.
"""

from __future__ import annotations

import numpy as np

ITERATIONS = 10


def two_groups(windows: np.ndarray, mass: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Weighted spherical 2-means of unit vectors ``windows`` (W, E) with weights ``mass`` (W,):
    (in_first (W,) bool, centre_a, centre_b), or None when all windows fall in one group.
    Seeds: the heaviest window, and the window least like it. Stops early once the groups
    stay the same (the centres, and so every later step, would too)."""
    a = int(np.argmax(mass))
    b = int(np.argmin(windows @ windows[a]))
    centre_a, centre_b = windows[a], windows[b]
    first = None
    for _ in range(ITERATIONS):
        sims = windows @ np.stack([centre_a, centre_b], 1)  # (W, 2)
        groups = sims[:, 0] >= sims[:, 1]
        if groups.all() or not groups.any():
            return None
        if first is not None and np.array_equal(groups, first):
            break
        first = groups
        centre_a = _unit((mass[first, None] * windows[first]).sum(0))
        centre_b = _unit((mass[~first, None] * windows[~first]).sum(0))
    return first, centre_a, centre_b


def split_mixed(embeddings: np.ndarray, confidence: np.ndarray, x: np.ndarray, windows: np.ndarray, mass: np.ndarray,
                starts: np.ndarray, ends: np.ndarray, split_cosine: float | None,
                min_share: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One window set's slots with every two-voice slot split in two.

    embeddings (N, E), confidence (N,), x (N, T) weightings at the frame rate; windows (W, E)
    window embeddings, mass (N, W) each slot's mass in each window, starts/ends (W,) frames.
    Returns embeddings (M, E), confidence (M,), x (M, T) with M >= N (a split slot's halves
    take its place, in order)."""
    if split_cosine is None or not len(windows):
        return embeddings, confidence, x
    out_e, out_c, out_x = [], [], []
    t = x.shape[1]
    for n in range(len(confidence)):
        m = mass[n]
        held = np.flatnonzero(m > 1e-3 * max(float(m.max()), 1e-12))
        groups = two_groups(windows[held], m[held]) if len(held) >= 2 else None
        if groups is not None:
            first, centre_a, centre_b = groups
            share = float(m[held][first].sum() / max(m[held].sum(), 1e-12))
            if float(centre_a @ centre_b) < split_cosine and min(share, 1 - share) >= min_share:
                cover = np.zeros((2, t + 1))  # each group's mass over the frames its windows span
                for group in (0, 1):
                    picked = held[first] if group == 0 else held[~first]
                    np.add.at(cover[group], np.minimum(starts[picked], t), m[picked])
                    np.add.at(cover[group], np.minimum(ends[picked], t), -m[picked])
                cover = np.cumsum(cover, axis=1)[:, :t]
                total = cover.sum(0)
                total[total <= 0] = 1.0
                for group, centre in ((0, centre_a), (1, centre_b)):
                    out_e.append(centre)
                    out_c.append(confidence[n])
                    out_x.append(x[n] * cover[group] / total)
                continue
        out_e.append(embeddings[n])
        out_c.append(confidence[n])
        out_x.append(x[n])
    return (np.stack(out_e).astype(np.float32), np.array(out_c, np.float32),
            np.stack(out_x).astype(np.float32))


WINDOW_KEYS = ("windows", "mass", "window_starts", "window_ends")


def output_row(out: dict, b: int, frames: int) -> dict:
    """Row ``b`` of a model's output as numpy: embeddings, confidence, x (its ``frames`` valid
    frames) and, when the model pools by windows, what ``split_mixed`` needs."""
    row = {"embeddings": out["embeddings"][b], "confidence": out["confidence"][b], "x": out["x"][b, :, :frames]}
    row.update({k: out[k][b] for k in WINDOW_KEYS if k in out})
    return {k: (v.float() if v.is_floating_point() else v).cpu().numpy() for k, v in row.items()}


def row_slots(row: dict, split_cosine: float | None, min_share: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A row's embeddings, confidence and x, two-voice slots split when it has windows."""
    if "windows" not in row:
        return row["embeddings"], row["confidence"], row["x"]
    return split_mixed(row["embeddings"], row["confidence"], row["x"], row["windows"], row["mass"],
                       row["window_starts"], row["window_ends"], split_cosine, min_share)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)
