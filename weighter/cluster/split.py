"""Splitting a group that holds two voices: a two-Gaussian test along the group's main direction.

HDBSCAN keeps two near-identical voices (one vocal tract through two voice sources, sibling
synthesisers) in one group when nothing sparse lies between them: each is too small a group
for the condensed tree to prefer over their union. Inside such a group, though, the
direction from one voice to the other is the one its members vary most along. So each group
of at least twice the smallest group size is projected onto its first principal direction
(the raw slot embeddings, centred on the group's mean), and a mixture of two Gaussians is
fitted to those values by EM; the group splits in two when the mixture's Bayesian
information criterion is lower than one Gaussian's by more than ``evidence`` and each part
keeps at least the smallest group size. One test per group, no recursion.
"""

from __future__ import annotations

import numpy as np

VARIANCE_FLOOR = 1e-6  # added to every fitted variance (as sklearn's reg_covar): no part collapses onto a point
EM_STEPS = 200


def two_voices(z: np.ndarray, min_part: int, evidence: float) -> np.ndarray | None:
    """The 0/1 part of each value of ``z`` (1-D) when two Gaussians explain it better than one
    by more than ``evidence`` of BIC and each part has at least ``min_part`` values; else None."""
    z = np.asarray(z, np.float64)
    n = len(z)
    if n < 2 * min_part or n < 4:
        return None
    var = z.var() + VARIANCE_FLOOR
    one = n * (np.log(2 * np.pi * var) + 1) + 2 * np.log(n)  # -2 log L + 2 parameters x log n
    order = np.sort(z)
    cut = _best_cut(order, min_part)
    mean = np.array([order[:cut].mean(), order[cut:].mean()])
    spread = np.array([order[:cut].var(), order[cut:].var()]) + VARIANCE_FLOOR
    weight = np.array([cut, n - cut]) / n
    previous = -np.inf
    for _ in range(EM_STEPS):
        log_p, log_total = _log_parts(z, weight, mean, spread)
        resp = np.exp(log_p - log_total[:, None])
        mass = resp.sum(0)
        if mass.min() < 1e-9:  # one component emptied: one Gaussian it is
            return None
        weight, mean = mass / n, (resp * z[:, None]).sum(0) / mass
        spread = (resp * (z[:, None] - mean) ** 2).sum(0) / mass + VARIANCE_FLOOR
        if log_total.sum() - previous < 1e-9 * abs(log_total.sum()):
            break
        previous = log_total.sum()
    log_p, log_total = _log_parts(z, weight, mean, spread)
    two = -2 * log_total.sum() + 5 * np.log(n)  # 5 parameters: 2 means, 2 variances, 1 weight
    part = np.argmax(log_p, 1)
    if one - two <= evidence or np.bincount(part, minlength=2).min() < min_part:
        return None
    return part


def _log_parts(z, weight, mean, spread) -> tuple[np.ndarray, np.ndarray]:
    """Each value's log density under each component (weighted), (n, 2), and under the mixture, (n,)."""
    log_p = np.log(weight) - 0.5 * np.log(2 * np.pi * spread) - (z[:, None] - mean) ** 2 / (2 * spread)
    top = log_p.max(1, keepdims=True)
    return log_p, top[:, 0] + np.log(np.exp(log_p - top).sum(1))


def _best_cut(order: np.ndarray, min_part: int) -> int:
    """Where sorted values split into two runs of least summed squared deviation (1-D 2-means,
    exact), each side at least ``min_part`` long: the EM's start."""
    n = len(order)
    cuts = np.arange(min_part, n - min_part + 1)
    total, squares = np.cumsum(order), np.cumsum(order ** 2)
    left = squares[cuts - 1] - total[cuts - 1] ** 2 / cuts
    right = (squares[-1] - squares[cuts - 1]) - (total[-1] - total[cuts - 1]) ** 2 / (n - cuts)
    return int(cuts[np.argmin(left + right)])


def split_groups(X: np.ndarray, labels: np.ndarray, min_part: int, evidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels with every group that holds two voices split in two (``two_voices`` along the
    group's first principal direction in ``X``), the new parts numbered after the existing
    groups; and for every group of the result the group it came from (itself if not split)."""
    labels = np.asarray(labels).copy()
    groups = int(labels.max()) + 1 if len(labels) else 0
    parent = list(range(groups))
    for g in range(groups):
        members = np.flatnonzero(labels == g)
        if len(members) < 2 * min_part:
            continue
        centred = np.asarray(X[members], np.float64)
        centred -= centred.mean(0)
        u, s, _ = np.linalg.svd(centred, full_matrices=False)
        part = two_voices(u[:, 0] * s[0], min_part, evidence)
        if part is not None:
            labels[members[part == 1]] = len(parent)
            parent.append(g)
    return labels, np.array(parent, np.int64)
