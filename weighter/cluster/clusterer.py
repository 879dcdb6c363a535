"""Discovered groups: HDBSCAN over slot embeddings, after PCA, sklearn-style.

``SlotClusterer(...).fit(X)`` sets ``labels_`` (-1 = outlier), ``probabilities_`` and the state
that ``predict`` needs to place new slots into the fitted groups without re-clustering.

Scale: HDBSCAN is fitted on at most ``sample_size`` slots (a random sample); every other slot
is then assigned by ``predict``. Prediction follows HDBSCAN's approximate_predict: a new point
goes to the group of the fitted point nearest to it in *mutual reachability* distance
max(core(a), core(b), d(a, b)), if that point is in a group; its membership is that point's
core distance over the mutual reachability distance (1 when it sits inside the core). The
state is plain arrays (PCA basis, fitted points, core distances, labels), stored in SQLite,
never pickled.

The space: PCA (64 dimensions by default); each component divided by the square root of
max(its variance, the mean variance of the kept components) over the fitted sample (capped
whitening: the strong components are brought down to the mean, weak ones are never lifted);
each slot then scaled to unit length. The aim: the weaker components, where near-identical
voices may differ, count for more against the few strong ones (voice families, pitch). Full
whitening lifted pure-noise components as high as real ones when a corpus has fewer speakers
than dimensions, and lost well-separated groups. ``whiten=False`` keeps plain PCA distances
(how runs were made before).
"""

from __future__ import annotations

import numpy as np

from weighter.cluster.mst import hdbscan_from_mst
from weighter.cluster.split import split_groups


# How far beyond its farthest member a group still takes a new slot (SlotClusterer._group_reach).
# `python benchmarks/cluster_assign.py --split validation --seeds 5 6 7 --group-slack ...` (files
# added after a run of 80; strangers from the first probe bank): slack 2.0 / 1.5 / 1.25 / 1.0
# placed 0.990 / 0.990 / 0.962 / 0.837 of known speakers' slots in their group and kept 0.573 /
# 0.653 / 0.800 / 0.973 of strangers' slots out of every group.
GROUP_SLACK = 1.5
# FAISS computes squared distances in float32: a slot and its exact copy can come out up to
# ~1e-3 apart after the square root (unit-scale slots), never a real difference between voices.
DISTANCE_NOISE = 1e-3
# HDBSCAN's min_samples: 1 makes the core distance a slot's nearest other slot. A speaker is
# often heard in only a few files, so larger values call many of his slots noise. Measured on
# 100 validation files (`python benchmarks/cluster_tuning.py`, shipped model with its slot
# split, PCA 64, eom): min_samples 1 / 2 / 3 gave outliers 3.2% / 7.1% / 10.7%, link F1
# 0.900 / 0.885 / 0.829. (PCA dimensions: see DEFAULT_PCA_DIMS.)
DEFAULT_MIN_SAMPLES = 1
# Capped whitening, unit length (`python benchmarks/cluster_tuning.py --seeds 5 6 7 8 9 --pca 32
# 64 --whiten on off --min-samples 1 --methods eom [--probe-voices 12]`, shipped model; rules
# e3e4575, e79288e): link F1 / ARI on five validation corpora, PCA 32 0.858 / 0.854, 64 0.867 /
# 0.869 (plain 64, the default before: 0.862 / 0.856); on five probe corpora of near-identical
# voices 0.705 / 0.688 and 0.703 / 0.688 (plain 64: 0.695 / 0.672). Both passed; 32 was taken by
# 0.001 of probe gain. On fresh corpora (rule e2623ea: five validation corpora of seeds 10-14,
# five of a second probe bank, `--probe-voices 12 --bank-seed 1`) 64 led 32 by 0.009 over the
# four figures (validation 0.848 / 0.840 vs 0.856 / 0.843, probe 0.731 / 0.715 vs 0.712 /
# 0.686; plain 64 0.852 / 0.832 and 0.716 / 0.687): 64.
DEFAULT_PCA_DIMS = 64
# A group's persistence (hdbscan's cluster_persistence_: how long, in the condensed tree, the
# group holds together before it falls apart, 0-1) says how clearly it stands apart.
# `python benchmarks/cluster_persistence.py` (shipped model, six 100-file corpora: held-out
# seeds 7, 8, validation 5, 6, probe 5, 6; 224 groups): the share of a group's file pairs that
# truly share a speaker was 0.70 for groups of persistence 0.02-0.05, 0.76-0.79 for 0.05-0.2,
# 0.91-0.93 above 0.2; each corpus's strongest group 0.52-0.83. Where nobody speaks in two files
# HDBSCAN still finds groups: one file per speaker of those corpora (15-24 slots) gave at most
# 0.04-0.06, or 0.17-0.18 where near-identical voices were among them (the model hears such a
# family as one speaker); random unit vectors in 256-d (12, 50, 300) at most 0.079 (in 16-d, up
# to 0.17: few dimensions make chance structure). Below this for every group, a run warns.
LOW_PERSISTENCE = 0.1
# ``split_evidence``: a group holding two voices is split in two when two Gaussians along its
# main direction beat one by more than this much BIC (weighter.cluster.split). Off by default:
# under rule e8cc193, evidence 5 on fresh corpora (`python benchmarks/cluster_tuning.py --seeds
# 20 21 22 23 24 --pca 64 --min-samples 1 --methods eom --split-evidence none 5`, and with
# `--probe-voices 12 --bank-seed 3 --seeds 5 6 7 8 9`) moved link F1 / ARI from 0.8685 / 0.8667
# to 0.8529 / 0.8557 on validation voices, from 0.7235 / 0.7129 to 0.7386 / 0.7336 on probe
# voices (near-identical pairs): it splits merged look-alikes and, about as often, one voice.


def default_min_cluster_size(n_fit: int) -> int:
    """Smallest group, in slots of the fitted sample: 3 up to 4k slots, then growing with
    log2 of the sample (5 at 30k). A like must recur in a few files; much larger minima would
    hide the speakers heard in few files (at 100k slots of 2000 speakers, a 30k sample holds
    about 15 slots of each)."""
    return int(max(3, int(np.log2(max(n_fit, 2))) - 9))


class SlotClusterer:
    def __init__(self, min_cluster_size: int | None = None, min_samples: int | None = None,
                 pca_dims: int = DEFAULT_PCA_DIMS, sample_size: int = 30_000, cluster_selection_method: str = "eom",
                 random_state: int = 0, whiten: bool = True, split_evidence: float | None = None,
                 group_slack: float = GROUP_SLACK):
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.pca_dims = pca_dims
        self.whiten = whiten
        self.sample_size = sample_size
        self.cluster_selection_method = cluster_selection_method
        self.random_state = random_state
        self.split_evidence = split_evidence
        self.group_slack = group_slack

    def get_params(self) -> dict:
        return {"min_cluster_size": self.min_cluster_size, "min_samples": self.min_samples, "pca_dims": self.pca_dims,
                "sample_size": self.sample_size, "cluster_selection_method": self.cluster_selection_method,
                "random_state": self.random_state, "whiten": self.whiten,
                "split_evidence": self.split_evidence, "group_slack": self.group_slack}

    def fit(self, X: np.ndarray) -> "SlotClusterer":
        X = np.asarray(X, dtype=np.float32)
        n = len(X)
        if n < 2:
            raise ValueError(f"clustering needs at least 2 slots, got {n}")
        rng = np.random.default_rng(self.random_state)
        sample = np.sort(rng.permutation(n)[: self.sample_size]) if n > self.sample_size else np.arange(n)
        self.min_cluster_size_ = self.min_cluster_size or default_min_cluster_size(len(sample))
        self.min_samples_ = self.min_samples or DEFAULT_MIN_SAMPLES
        dims = min(self.pca_dims, X.shape[1], len(sample)) if self.pca_dims else X.shape[1]
        self.mean_ = X[sample].mean(0)
        if self.pca_dims and dims < X.shape[1]:
            _, _, vt = np.linalg.svd(X[sample] - self.mean_, full_matrices=False)
            self.components_ = vt[:dims].astype(np.float32)  # (d, E)
        else:
            self.components_ = np.eye(X.shape[1], dtype=np.float32)
        self.whiten_ = self.whiten
        variance = ((X[sample] - self.mean_) @ self.components_.T).var(0)
        self.scale_ = np.sqrt(np.maximum(variance, max(variance.mean(), 1e-12))).astype(np.float32) if self.whiten_ \
            else np.ones(len(self.components_), np.float32)
        Z, residual = self._space(X)
        self.residual_ = residual[sample]
        self.points_ = Z[sample]
        self.core_ = self._core_distances(self.points_, self.points_, self_included=True)
        fitted = hdbscan_from_mst(self.points_, self.core_, min(self.min_cluster_size_, len(sample)),
                                  self.cluster_selection_method)
        self.point_labels_ = fitted.labels_.astype(np.int64)
        self.persistence_ = np.asarray(fitted.cluster_persistence_, np.float32)  # per group, see LOW_PERSISTENCE
        self.reach_ = self._group_reach(fitted, len(sample))
        self.split_from_ = np.arange(len(self.persistence_))  # the group each group came from (itself: not split)
        if self.split_evidence is not None and len(self.persistence_):
            # the two parts of a split group keep its persistence and reach limit
            self.point_labels_, self.split_from_ = split_groups(X[sample], self.point_labels_, self.min_cluster_size_,
                                                                self.split_evidence)
            self.persistence_ = self.persistence_[self.split_from_]
            self.reach_ = self.reach_[self.split_from_]
        labels = np.full(n, -1, np.int64)
        probs = np.zeros(n, np.float32)
        labels[sample], probs[sample] = self.point_labels_, fitted.probabilities_
        rest = np.setdiff1d(np.arange(n), sample)
        if len(rest):
            labels[rest], probs[rest] = self._assign(Z[rest], residual[rest])
        self.labels_, self.probabilities_ = labels, probs
        self.sample_ = sample
        return self

    @property
    def groups_split_(self) -> int:
        """How many groups of the fit are the second part of a split group (split_evidence)."""
        return int((self.split_from_ != np.arange(len(self.split_from_))).sum())

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Slots in the clustering space (PCA; whitened and unit length unless ``whiten=False``)."""
        return self._space(X)[0]

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels and membership strengths of new slots in the fitted groups (no re-clustering)."""
        return self._assign(*self._space(X))

    def _space(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slots in the clustering space, and each slot's residual: what PCA drops of it, so that
        a slot far from every group in directions the basis does not span does not look close to
        them. Plain PCA: the norm of the dropped part (distances corrected with it are a lower
        bound of the full-space distance). Whitened: the sine of the angle between the centred
        slot and the basis, on the scale of the unit-length space."""
        centred = np.asarray(X, np.float32) - self.mean_
        Z = centred @ self.components_.T
        energy = (centred ** 2).sum(1)
        dropped = np.sqrt(np.maximum(energy - (Z ** 2).sum(1), 0))
        if not self.whiten_:
            return Z.astype(np.float32), dropped.astype(np.float32)
        Z = Z / self.scale_
        Z /= np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
        return Z.astype(np.float32), (dropped / np.maximum(np.sqrt(energy), 1e-12)).astype(np.float32)

    def _core_distances(self, queries: np.ndarray, points: np.ndarray, self_included: bool) -> np.ndarray:
        k = min(self.min_samples_ + (1 if self_included else 0), len(points))
        dist, _ = _knn(queries, points, k)
        return dist[:, k - 1]

    def _assign(self, Z: np.ndarray, residual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = min(max(10, 2 * self.min_samples_), len(self.points_))
        dist, idx = self._neighbours(Z, residual, k)
        core_new = dist[:, min(self.min_samples_, k) - 1]
        reach = np.maximum(np.maximum(dist, self.core_[idx]), core_new[:, None])  # mutual reachability
        best = np.argmin(reach, axis=1)
        rows = np.arange(len(Z))
        nearest = idx[rows, best]
        labels = self.point_labels_[nearest]
        gap = reach[rows, best]
        strength = _membership(self.core_[nearest], gap)
        outside = (labels < 0) | (gap > np.maximum(self.reach_[np.maximum(labels, 0)], DISTANCE_NOISE))
        labels, strength = np.where(outside, -1, labels), np.where(outside, 0.0, strength).astype(np.float32)
        return labels, strength

    def nearest_group(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The group of the nearest grouped fitted point and the membership strength, however far
        (``--assign-outliers`` then keeps those above a chosen strength)."""
        grouped = self.point_labels_ >= 0
        if not grouped.any():
            return np.full(len(X), -1), np.zeros(len(X), np.float32)
        dist, idx = self._neighbours(*self._space(X), 1, among=grouped)
        nearest = idx[:, 0]
        return self.point_labels_[nearest], _membership(self.core_[nearest], dist[:, 0])

    def _neighbours(self, Z: np.ndarray, residual: np.ndarray, k: int, among: np.ndarray | None = None):
        """k nearest fitted points (indices into points_), with distances corrected by the
        residuals (see _space)."""
        pool = np.arange(len(self.points_)) if among is None else np.flatnonzero(among)
        dist, idx = _knn(Z, self.points_[pool], k)  # (Q, k) euclidean in PCA space
        idx = pool[idx]
        return np.sqrt(dist ** 2 + (residual[:, None] - self.residual_[idx]) ** 2), idx

    def _group_reach(self, fitted, n: int) -> np.ndarray:
        """Per group: how far (mutual reachability) a new slot may be from the group's nearest
        member and still join it. hdbscan's approximate_predict accepts up to the distance at
        which the group was born in the condensed tree; for well separated groups that is the
        whole gap between them, so an unseen speaker would join one. The limit here is also
        capped at ``group_slack`` x the farthest distance at which any member still belonged (1 /
        the lambda where it left the group): a new slot must look like a member."""
        tree = fitted.condensed_tree_.to_numpy()
        groups = int(fitted.labels_.max()) + 1
        reach = np.full(max(groups, 1), np.inf, np.float32)
        leaves = tree[tree["child"] < n]
        leave = np.full(n, np.inf)
        leave[leaves["child"]] = 1.0 / np.maximum(leaves["lambda_val"], 1e-12)
        selected = _selected_clusters(tree, fitted.labels_, n)
        for g in range(groups):
            own = leave[fitted.labels_ == g]
            own = own[np.isfinite(own)]
            limit = self.group_slack * own.max() if len(own) else np.inf
            birth = tree["lambda_val"][tree["child"] == selected[g]]
            if len(birth) and birth[0] > 0:  # the root (no birth) has no limit of its own
                limit = min(limit, 1.0 / birth[0])
            reach[g] = limit
        return reach

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean_, "components": self.components_, "points": self.points_, "residual": self.residual_, "reach": self.reach_,
                "point_labels": self.point_labels_, "core": self.core_,
                "whiten": np.array(self.whiten_), "scale": self.scale_, "persistence": self.persistence_,
                "split_from": self.split_from_, "min_samples": np.array(self.min_samples_), "min_cluster_size": np.array(self.min_cluster_size_)}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> "SlotClusterer":
        c = cls()
        c.mean_, c.components_, c.points_ = state["mean"], state["components"], state["points"]
        c.point_labels_, c.core_, c.residual_ = state["point_labels"], state["core"], state["residual"]
        c.reach_ = state["reach"]
        # runs stored before whitening existed hold neither: plain PCA
        c.whiten_ = bool(state["whiten"]) if "whiten" in state else False
        c.scale_ = state["scale"] if "scale" in state else np.ones(len(c.components_), np.float32)
        c.persistence_ = state.get("persistence")  # None for runs stored before it was kept
        c.split_from_ = state.get("split_from")  # None for runs stored before groups were split
        c.min_samples_, c.min_cluster_size_ = int(state["min_samples"]), int(state["min_cluster_size"])
        return c


def _selected_clusters(tree: np.ndarray, labels: np.ndarray, n: int) -> list[int]:
    """The condensed tree's cluster of each group label: the deepest cluster holding all the
    group's points (each point's row names the cluster it fell out of). Read from the fit's own
    labels, because hdbscan's ``condensed_tree_._select_clusters()`` (its plotting helper) can
    select other clusters than the fit did."""
    parent = {int(c): int(p) for p, c in zip(tree["parent"], tree["child"]) if c >= n}
    fell_from = np.full(n, -1, np.int64)
    points = tree[tree["child"] < n]
    fell_from[points["child"]] = points["parent"]
    selected = []
    for g in range(int(labels.max()) + 1):
        chains = []
        for start in np.unique(fell_from[labels == g]):
            chain = [int(start)]
            while chain[-1] in parent:
                chain.append(parent[chain[-1]])
            chains.append(chain[::-1])  # root first
        common = 0
        while all(len(c) > common and c[common] == chains[0][common] for c in chains):
            common += 1
        selected.append(chains[0][common - 1])
    return selected


def _membership(core: np.ndarray, reach: np.ndarray) -> np.ndarray:
    """A new slot's strength in a group: its nearest member's core distance over the mutual
    reachability between them; 1 inside the core, as for a copy of a member (0 over 0)."""
    inside = reach <= core + DISTANCE_NOISE
    return np.where(inside, 1.0, np.clip(core / np.maximum(reach, 1e-12), 0, 1)).astype(np.float32)


def _knn(queries: np.ndarray, points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours (euclidean) with FAISS, in blocks to bound memory."""
    import faiss

    index = faiss.IndexFlatL2(points.shape[1])
    index.add(np.ascontiguousarray(points, np.float32))
    dist, idx = [], []
    for start in range(0, len(queries), 65_536):
        d, i = index.search(np.ascontiguousarray(queries[start:start + 65_536], np.float32), k)
        dist.append(np.sqrt(np.maximum(d, 0)))
        idx.append(i)
    return np.concatenate(dist), np.concatenate(idx)
