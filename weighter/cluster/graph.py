"""Groups from the store's evidence: HDBSCAN over a graph of slot pairs weighted by how likely
each pair is one voice.

Density clustering of raw slot embeddings (``SlotClusterer``) knows less than a query does: a
query scores a pair of slots against the model's score cohort and turns the score into a
calibrated probability ``p`` that the two files share a like. Here the clustering is given that
same evidence:

    every active slot -> its ``neighbours`` nearest slots of *other* files (the store's FAISS)
    -> each pair's score (cosine, normalised against the cohort, as a query scores it)
    -> p (the model's calibration at the base rate the store fitted to its own pairs, as a query's)
    -> a sparse graph of the pairs at least ``link_probability`` likely (0.5: more likely one
       voice than two), distance 1 - p; its minimum spanning forest, joined into one tree at
       distance 1 (p = 0)
    -> HDBSCAN (min_samples 1, groups of 2 allowed) on that tree -> groups and outliers: inside
       a connected part it splits chains that hang together by one weak pair
    -> at most one slot of a file in a group (the others, weaker members, become outliers)

A voice heard in exactly two files is a group of two when its two slots are close in p; two
alike voices each heard in one file have no third slot to hold them and stay apart unless
their p is as high as a shared voice's. ``GraphClusterer`` holds the hyperparameters and does
the fitting on a graph; ``cluster_store`` (runs.py) builds the graph from a store.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

from weighter.cluster.mst import _ZERO_EDGE

# A new slot joins a group when its p with the group's best member is at least this (assign).
DEFAULT_LINK_PROBABILITY = 0.5
DEFAULT_NEIGHBOURS = 10
DEFAULT_CERTAIN = 0.95  # pairs at least this likely are equally close (distance 1 - certain)


@dataclass
class EvidenceGraph:
    """A sparse graph over ``n`` slots: edge e joins slots ``a[e]`` and ``b[e]`` (indices into the
    clustered slots, a < b, each pair once) with match probability ``p[e]``."""

    n: int
    a: np.ndarray  # (E,) int64
    b: np.ndarray  # (E,) int64
    p: np.ndarray  # (E,) float64 in [0, 1]


def neighbour_graph(neighbours: np.ndarray, probability: np.ndarray, files: np.ndarray) -> EvidenceGraph:
    """The evidence graph from each slot's nearest slots.

    Parameters
    ----------
    neighbours : numpy.ndarray
        (n, K) indices of each slot's nearest slots (-1: none), itself and its own file's slots
        included or not: they are dropped here.
    probability : numpy.ndarray
        (n, K) the match probability of each of those pairs.
    files : numpy.ndarray
        (n,) the file of each slot: no edge joins two slots of one file.

    Returns
    -------
    EvidenceGraph
        Each pair once, with the larger p of its two directions.

    Examples
    --------
    >>> import numpy as np
    >>> g = neighbour_graph(np.array([[1], [0], [0]]), np.array([[0.9], [0.8], [0.2]]), np.array([0, 1, 2]))
    >>> g.a.tolist(), g.b.tolist(), g.p.tolist()
    ([0, 0], [1, 2], [0.9, 0.2])
    """
    n, k = neighbours.shape
    a = np.repeat(np.arange(n), k)
    b = neighbours.ravel()
    p = np.asarray(probability, np.float64).ravel()
    keep = (b >= 0) & (b != a)
    a, b, p = a[keep], b[keep], p[keep]
    keep = files[a] != files[b]
    a, b, p = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep]), p[keep]
    order = np.lexsort((-p, b, a))  # each pair's larger p first
    a, b, p = a[order], b[order], p[order]
    first = np.r_[True, (a[1:] != a[:-1]) | (b[1:] != b[:-1])]
    return EvidenceGraph(n, a[first], b[first], p[first])


class GraphClusterer(ClusterMixin, BaseEstimator):
    """HDBSCAN over the evidence graph of slot pairs (see the module docstring).

    A scikit-learn estimator: hyperparameters in the constructor, ``fit`` sets the attributes
    that end in ``_``. ``fit(X, files=...)`` builds the graph from embeddings alone (exact
    cosine neighbours, p from ``pair_probability`` or the cosine); ``fit_graph`` takes a graph
    built elsewhere (``cluster_store`` builds it from a store's index, cohort and calibration).

    Parameters
    ----------
    neighbours : int, default 10
        Nearest slots of other files each slot is joined to.
    min_cluster_size : int, default 2
        Smallest group, in slots: 2 keeps the voices heard in only two files.
    cluster_selection_method : {"eom", "leaf"}, default "eom"
        HDBSCAN's cluster selection.
    link_probability : float, default 0.5
        Pairs less likely than this are no edge at all: a slot with no such pair is an outlier.
        A new slot joins a group (``assign_set``) when its p with a member is at least this.
    certain : float, default 0.95
        Pairs at least this likely are all equally close: the distance is 1 - max(p, ...) no
        less than 1 - certain, so that HDBSCAN does not split a voice's files into subgroups by
        differences of p that no calibration resolves.

    Attributes
    ----------
    labels_ : ndarray of shape (n_slots,), int64
        Group of each slot, -1 for outliers.
    probabilities_ : ndarray of shape (n_slots,), float32
        Membership strength in [0, 1] (HDBSCAN's), 0 for outliers.
    persistence_ : ndarray of shape (n_groups,), float32
        How long each group holds together in HDBSCAN's condensed tree, 0-1.
    edges_ : int
        Edges of the graph.
    duplicates_ : int
        Slots turned outliers because a stronger slot of their file is in the same group.

    Examples
    --------
    >>> import numpy as np
    >>> from weighter.cluster.graph import GraphClusterer
    >>> rng = np.random.default_rng(0)
    >>> voices = rng.normal(size=(4, 32))
    >>> X = np.repeat(voices, 3, axis=0) + rng.normal(0, 0.1, (12, 32))  # 4 voices x 3 files
    >>> X /= np.linalg.norm(X, axis=1, keepdims=True)
    >>> labels = GraphClusterer(neighbours=4).fit(X, files=np.arange(12)).labels_
    >>> len(set(labels.tolist()) - {-1})
    4
    """

    def __init__(self, neighbours: int = DEFAULT_NEIGHBOURS, min_cluster_size: int = 2,
                 cluster_selection_method: str = "eom", link_probability: float = DEFAULT_LINK_PROBABILITY,
                 certain: float = DEFAULT_CERTAIN):
        self.certain = certain
        self.neighbours = neighbours
        self.min_cluster_size = min_cluster_size
        self.cluster_selection_method = cluster_selection_method
        self.link_probability = link_probability

    def fit(self, X: np.ndarray, y=None, files: np.ndarray | None = None, pair_probability=None) -> "GraphClusterer":
        """Group slots ``X`` from their exact cosine neighbours.

        Parameters
        ----------
        X : array-like of shape (n_slots, E)
            Unit-length slot embeddings; at least 2.
        y : None
            Ignored.
        files : array-like of shape (n_slots,), optional
            The file of each slot (default: every slot its own file).
        pair_probability : callable, optional
            (cosines (P,), slot a (P,), slot b (P,)) -> p (P,); default the cosine clipped to [0, 1].

        Returns
        -------
        GraphClusterer
        """
        from weighter.cluster.clusterer import _knn

        X = np.ascontiguousarray(X, np.float32)
        if len(X) < 2:
            raise ValueError(f"clustering needs at least 2 slots, got {len(X)}")
        files = np.arange(len(X)) if files is None else np.asarray(files)
        k = min(len(X), self.neighbours + 1 + int(np.bincount(np.unique(files, return_inverse=True)[1]).max()))
        dist, idx = _knn(X, X, k)
        cos = 1 - dist ** 2 / 2  # unit vectors
        rows = np.repeat(np.arange(len(X))[:, None], k, 1)
        p = np.clip(cos, 0, 1) if pair_probability is None else np.asarray(
            pair_probability(cos.ravel(), rows.ravel(), idx.ravel())).reshape(cos.shape)
        return self.fit_graph(neighbour_graph(other_file_neighbours(idx, files, self.neighbours), _take_others(
            idx, p, files, self.neighbours), files), files)

    def fit_graph(self, graph: EvidenceGraph, files: np.ndarray) -> "GraphClusterer":
        """Group the slots of an evidence graph; ``files`` (n,) keeps one slot per file in a group."""
        import hdbscan
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

        n = graph.n
        keep = graph.p >= self.link_probability
        a, b = graph.a[keep], graph.b[keep]
        # 1 - p, but no closer than 1 - certain: above it p says "one voice" with all the certainty a
        # calibration has, and finer differences would only split a voice's files into subgroups
        distance = np.maximum(1.0 - graph.p[keep], 1.0 - self.certain)
        self.edges_ = int(keep.sum())
        forest = minimum_spanning_tree(coo_matrix((distance, (a, b)), shape=(n, n)).tocsr()).tocoo()
        # One tree: every part of the forest hangs from a sentinel pair (nodes n, n + 1) at
        # distance 1 (p = 0), so the parts meet only at the root, and each part of 2 or more
        # slots is a child cluster of its own there (with a single such part, HDBSCAN would
        # take it for the root going on, which it never selects).
        count, component = connected_components(forest, directed=False)
        roots = np.unique(component, return_index=True)[1]
        ta = np.r_[forest.row, np.full(count, n), n]
        tb = np.r_[forest.col, roots, n + 1]
        tw = np.r_[forest.data, np.ones(count), _ZERO_EDGE]
        size = n + 2
        tree = coo_matrix((np.r_[tw, tw], (np.r_[ta, tb], np.r_[tb, ta])), shape=(size, size)).tocsr()
        fitted = hdbscan.HDBSCAN(metric="precomputed", min_samples=1, min_cluster_size=max(2, self.min_cluster_size),
                                 cluster_selection_method=self.cluster_selection_method).fit(tree)
        labels = fitted.labels_[:n].astype(np.int64)  # the sentinel pair's group is dropped by _renumber
        strength = np.asarray(fitted.probabilities_[:n], np.float32).copy()
        self.duplicates_ = _one_slot_per_file(labels, strength, np.asarray(files))
        labels, self.persistence_ = _renumber(labels, np.asarray(fitted.cluster_persistence_, np.float32))
        strength[labels < 0] = 0.0
        self.labels_, self.probabilities_ = labels, strength
        return self

    def state(self) -> dict[str, np.ndarray]:
        """What a clustering run stores: the kind, the hyperparameters and the persistence
        (``assign_set`` places new slots from the store's own slots and memberships)."""
        return {"kind": np.array("graph"), "persistence": self.persistence_,
                "link_probability": np.array(self.link_probability), "neighbours": np.array(self.neighbours)}


def other_file_neighbours(idx: np.ndarray, files: np.ndarray, count: int) -> np.ndarray:
    """Per row, the first ``count`` neighbours of another file (-1 where fewer)."""
    other = (idx >= 0) & (files[np.maximum(idx, 0)] != files[np.arange(len(idx))][:, None])
    rank = np.cumsum(other, 1)
    return np.where(other & (rank <= count), idx, -1)


def _take_others(idx: np.ndarray, p: np.ndarray, files: np.ndarray, count: int) -> np.ndarray:
    return np.where(other_file_neighbours(idx, files, count) >= 0, p, 0.0)


def _one_slot_per_file(labels: np.ndarray, strength: np.ndarray, files: np.ndarray) -> int:
    """In place: where a group holds several slots of one file, the strongest stays; the others
    become outliers. Returns how many were dropped."""
    grouped = np.flatnonzero(labels >= 0)
    if not len(grouped):
        return 0
    order = grouped[np.lexsort((-strength[grouped], files[grouped], labels[grouped]))]
    key = np.stack([labels[order], files[order]], 1)
    repeat = np.r_[False, (key[1:] == key[:-1]).all(1)]
    labels[order[repeat]] = -1
    return int(repeat.sum())


def _renumber(labels: np.ndarray, persistence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Groups numbered 0.. in order, dropping any left with fewer than 2 slots."""
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    alive = ids[counts >= 2]
    new = np.full(max(int(labels.max(initial=-1)) + 1, 1), -1, np.int64)
    new[alive] = np.arange(len(alive))
    out = np.where(labels >= 0, new[np.maximum(labels, 0)], -1)
    return out, np.asarray(persistence, np.float32)[alive] if len(alive) else np.zeros(0, np.float32)
