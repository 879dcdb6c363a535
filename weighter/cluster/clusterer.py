"""Discovered groups: HDBSCAN over slot embeddings, after PCA, as a scikit-learn estimator.

``SlotClusterer(...).fit(X)`` sets ``labels_`` (-1 = outlier), ``probabilities_`` and the state
that ``predict`` needs to place new slots into the fitted groups without re-clustering.

Scale: HDBSCAN is fitted on at most ``sample_size`` slots (a random sample); every other slot
is then assigned by ``predict``, as HDBSCAN's approximate_predict does: to the group of the
fitted point nearest in *mutual reachability* distance, max(core(a), core(b), d(a, b)). The
state is plain arrays (PCA basis, fitted points, core distances, labels), stored in SQLite,
never pickled.

The space: PCA, capped whitening (components stronger than the mean variance are brought down
to it, weaker ones are never lifted), then unit length, so that the weak components where
near-identical voices differ count for more against the few strong ones (voice families,
pitch). ``whiten=False`` keeps plain PCA distances. Measurements: ``docs/results.md``
("cluster whitening"); the reasoning in full: ``docs/code-notes.md``.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

from weighter.cluster.mst import hdbscan_from_mst
from weighter.cluster.split import split_groups


# How far beyond its farthest member a group still takes a new slot, as a multiple of that
# member's distance (``_group_reach``). Measured: docs/results.md, "cluster assign, group slack".
GROUP_SLACK = 1.5
# FAISS computes squared distances in float32: a slot and its exact copy can come out up to
# ~1e-3 apart after the square root (unit-scale slots), never a real difference between voices.
DISTANCE_NOISE = 1e-3
# HDBSCAN's min_samples: 1 makes the core distance a slot's nearest other slot, since a speaker
# heard in few files would otherwise be called noise. Measured: docs/results.md, "cluster tuning".
DEFAULT_MIN_SAMPLES = 1
# PCA dimensions kept before HDBSCAN (capped whitening, unit length); 64 led 32 on fresh
# validation and probe corpora. Measured: docs/results.md, "cluster whitening".
DEFAULT_PCA_DIMS = 64
# A group's persistence (0-1: how long it holds together in the condensed tree) below which, for
# every group, a run warns that its groups may be chance. Measured: docs/results.md, "cluster persistence".
LOW_PERSISTENCE = 0.1
# ``split_evidence`` (BIC by which two Gaussians must beat one to split a group) is off by default:
# it splits merged look-alikes and about as often one voice. docs/results.md, "cluster group split".


def default_min_cluster_size(n_fit: int) -> int:
    """The smallest group, in slots, when ``min_cluster_size`` is not given.

    3 up to 4k slots, then growing with log2 of the sample (5 at 30k). A like must recur in a
    few files; much larger minima would hide the speakers heard in few files (at 100k slots of
    2000 speakers, a 30k sample holds about 15 slots of each).

    Parameters
    ----------
    n_fit : int
        Slots HDBSCAN is fitted on (the sample, at most ``sample_size``).

    Returns
    -------
    int
        The smallest group size, at least 3.

    Examples
    --------
    >>> default_min_cluster_size(1000), default_min_cluster_size(30_000)
    (3, 5)
    """
    return int(max(3, int(np.log2(max(n_fit, 2))) - 9))


class SlotClusterer(ClusterMixin, BaseEstimator):
    """HDBSCAN over slot embeddings in a whitened PCA space; new slots placed without refitting.

    A scikit-learn estimator: the constructor only stores its hyperparameters, so
    ``get_params``, ``set_params`` and ``sklearn.base.clone`` work; ``fit`` learns the groups
    and sets the attributes that end in ``_``.

    Parameters
    ----------
    min_cluster_size : int or None, default None
        Smallest group, in slots of the fitted sample; None: ``default_min_cluster_size``.
    min_samples : int or None, default None
        HDBSCAN's min_samples (larger: more conservative, more outliers); None: 1.
    pca_dims : int, default 64
        PCA dimensions kept before HDBSCAN; 0 keeps the embedding space.
    sample_size : int, default 30000
        HDBSCAN is fitted on at most this many slots (a seeded random sample); the rest are
        placed by ``predict``.
    cluster_selection_method : {"eom", "leaf"}, default "eom"
        HDBSCAN's cluster selection.
    random_state : int, default 0
        Seed of the sample.
    whiten : bool, default True
        Capped whitening and unit length after PCA; False keeps plain PCA distances.
    split_evidence : float or None, default None
        Split a group holding two voices when two Gaussians along its main direction beat one
        by more than this much BIC (``weighter.cluster.split``); None: never.
    group_slack : float, default 1.5
        How far beyond its farthest member a group takes a new slot, as a multiple of that
        member's distance.
    pair_cosine : float or None, default None
        Also make a group of two outlier slots that are each other's most alike slot with a
        cosine of at least this: a voice heard in only two files, which HDBSCAN's smallest group
        (3 slots) cannot hold. ``cluster_store`` sets it from the model's pair calibration;
        None: no pairs.

    Attributes
    ----------
    labels_ : ndarray of shape (n_slots,), int64
        Group of each fitted slot, -1 for outliers.
    probabilities_ : ndarray of shape (n_slots,), float32
        Membership strength of each slot in its group, in [0, 1] (0 for outliers).
    persistence_ : ndarray of shape (n_groups,), float32
        How long each group holds together in HDBSCAN's condensed tree, 0-1 (0 for pairs).
    pairs_ : int
        Groups of two made by ``pair_cosine`` (numbered after HDBSCAN's).
    sample_ : ndarray of int
        Indices of the slots HDBSCAN was fitted on.
    min_cluster_size_, min_samples_ : int
        The values used (the defaults resolved).
    mean_, components_, scale_ : ndarray
        The PCA mean (E,), basis (d, E) and whitening scale (d,).

    Examples
    --------
    >>> import numpy as np
    >>> from weighter import SlotClusterer
    >>> rng = np.random.default_rng(0)
    >>> centres = rng.normal(size=(3, 32))
    >>> X = np.repeat(centres, 20, axis=0) + rng.normal(0, 0.05, (60, 32))  # 3 voices x 20 slots
    >>> clusterer = SlotClusterer(pca_dims=16).fit(X)
    >>> len(set(clusterer.labels_) - {-1})
    3
    >>> labels, strength = clusterer.predict(X[:2])
    """

    def __init__(self, min_cluster_size: int | None = None, min_samples: int | None = None,
                 pca_dims: int = DEFAULT_PCA_DIMS, sample_size: int = 30_000, cluster_selection_method: str = "eom",
                 random_state: int = 0, whiten: bool = True, split_evidence: float | None = None,
                 group_slack: float = GROUP_SLACK, pair_cosine: float | None = None):
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.pca_dims = pca_dims
        self.whiten = whiten
        self.sample_size = sample_size
        self.cluster_selection_method = cluster_selection_method
        self.random_state = random_state
        self.split_evidence = split_evidence
        self.group_slack = group_slack
        self.pair_cosine = pair_cosine

    def fit(self, X: np.ndarray, y=None) -> "SlotClusterer":
        """Find the groups among slots ``X``.

        Parameters
        ----------
        X : array-like of shape (n_slots, E)
            Slot embeddings (unit length, as the embedder writes them); at least 2 slots.
        y : None
            Ignored; present for scikit-learn's API.

        Returns
        -------
        SlotClusterer
            ``self``, with ``labels_``, ``probabilities_`` and the state ``predict`` needs.

        Raises
        ------
        ValueError
            Fewer than 2 slots.
        """
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
        fitted_probs = np.asarray(fitted.probabilities_, np.float32).copy()
        self.pairs_ = 0
        if self.pair_cosine is not None:
            self.pairs_ = self._pair_outliers(X[sample], fitted_probs)
        labels = np.full(n, -1, np.int64)
        probs = np.zeros(n, np.float32)
        labels[sample], probs[sample] = self.point_labels_, fitted_probs
        rest = np.setdiff1d(np.arange(n), sample)
        if len(rest):
            labels[rest], probs[rest] = self._assign(Z[rest], residual[rest])
        self.labels_, self.probabilities_ = labels, probs
        self.sample_ = sample
        return self

    def _pair_outliers(self, X: np.ndarray, probs: np.ndarray) -> int:
        """Make a group of each two fitted outliers that are each other's most alike fitted slot
        (cosine of ``X``, (n, E) unit rows) at ``pair_cosine`` or more; returns how many."""
        out = np.flatnonzero(self.point_labels_ < 0)
        if len(out) < 2:
            return 0
        nearest = np.empty(len(out), np.int64)
        best = np.empty(len(out), np.float32)
        for start in range(0, len(out), 1024):  # (1024, n) cosines at a time: bounded memory
            rows = out[start:start + 1024]
            sims = X[rows] @ X.T
            sims[np.arange(len(rows)), rows] = -np.inf  # not itself
            nearest[start:start + 1024], best[start:start + 1024] = sims.argmax(1), sims.max(1)
        partner = dict(zip(out.tolist(), nearest.tolist()))
        pairs = [(a, b) for (a, b), cos in zip(partner.items(), best)
                 if a < b and partner.get(b) == a and cos >= self.pair_cosine]
        if pairs:  # reach_ holds one placeholder when HDBSCAN found no group
            self.reach_ = self.reach_[:len(self.persistence_)]
        for a, b in pairs:
            group = len(self.persistence_)
            self.point_labels_[[a, b]] = group
            probs[[a, b]] = 1.0
            gap = float(np.linalg.norm(self.points_[a] - self.points_[b]))  # in the clustering space
            self.persistence_ = np.append(self.persistence_, np.float32(0.0))  # no condensed tree behind it
            self.reach_ = np.append(self.reach_, np.float32(self.group_slack * gap))
            self.split_from_ = np.append(self.split_from_, group)
        return len(pairs)

    @property
    def groups_split_(self) -> int:
        """How many groups of the fit are the second part of a split group (split_evidence)."""
        return int((self.split_from_ != np.arange(len(self.split_from_))).sum())

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Slots in the clustering space.

        Parameters
        ----------
        X : array-like of shape (n_slots, E)
            Slot embeddings.

        Returns
        -------
        ndarray of shape (n_slots, d), float32
            PCA coordinates; whitened and unit length unless ``whiten=False``.
        """
        return self._space(X)[0]

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Place new slots into the fitted groups, without re-clustering.

        Parameters
        ----------
        X : array-like of shape (n_slots, E)
            Slot embeddings.

        Returns
        -------
        labels : ndarray of shape (n_slots,), int64
            The group of each slot, -1 where it is too far from every group.
        strength : ndarray of shape (n_slots,), float32
            Membership strength in [0, 1] (0 for -1).

        Examples
        --------
        >>> labels, strength = SlotClusterer().fit(X).predict(new_slots)  # doctest: +SKIP
        """
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
        """The group of the nearest grouped fitted slot, however far (unlike ``predict``).

        ``cluster_store(..., assign_outliers=s)`` uses it to place outliers whose strength is at
        least ``s``.

        Parameters
        ----------
        X : array-like of shape (n_slots, E)
            Slot embeddings.

        Returns
        -------
        labels : ndarray of shape (n_slots,)
            The nearest group (-1 only when the fit found no group).
        strength : ndarray of shape (n_slots,), float32
            Membership strength in that group, in [0, 1].
        """
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
        """The fitted state as plain arrays (what a clustering run stores in SQLite).

        Returns
        -------
        dict of str to ndarray
            Everything ``from_state`` needs to ``predict`` again.
        """
        return {"mean": self.mean_, "components": self.components_, "points": self.points_, "residual": self.residual_, "reach": self.reach_,
                "point_labels": self.point_labels_, "core": self.core_,
                "whiten": np.array(self.whiten_), "scale": self.scale_, "persistence": self.persistence_,
                "split_from": self.split_from_, "min_samples": np.array(self.min_samples_), "min_cluster_size": np.array(self.min_cluster_size_)}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> "SlotClusterer":
        """A fitted clusterer rebuilt from ``state()`` (its hyperparameters are the defaults).

        Parameters
        ----------
        state : dict of str to ndarray
            As ``state()`` returned it, or as a clustering run stored it.

        Returns
        -------
        SlotClusterer
            Ready for ``predict``, ``transform`` and ``nearest_group``.

        Examples
        --------
        >>> again = SlotClusterer.from_state(clusterer.state())  # doctest: +SKIP
        """
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
