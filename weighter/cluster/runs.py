"""Clustering a store's active slots and keeping each run in the store's SQLite database.

Tables (next to the index's own)::

    cluster_runs     id, created, model_id, params (JSON), counts, the clusterer's state (npz)
    cluster_members  run_id, slot_id, group_id (-1 = outlier), probability, how it got there
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from weighter.cluster.clusterer import LOW_PERSISTENCE, SlotClusterer
from weighter.cluster.graph import EvidenceGraph, GraphClusterer, neighbour_graph, other_file_neighbours
from weighter.embedding_set import EmbeddingSet, spans
from weighter.errors import WeighterError
from weighter.index.speakers import clustering_run, run_names
from weighter.index.store import Store

SPAN_ROWS = 20_000  # members whose timelines run_result reads at once (a 1M-slot run: 26 s by file sets)
SCHEMA = """
CREATE TABLE IF NOT EXISTS cluster_runs (
    id INTEGER PRIMARY KEY, created REAL NOT NULL, model_id TEXT, params TEXT NOT NULL,
    slots INTEGER NOT NULL, groups INTEGER NOT NULL, outlier_share REAL NOT NULL, state BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS cluster_members (
    run_id INTEGER NOT NULL REFERENCES cluster_runs(id) ON DELETE CASCADE,
    slot_id INTEGER NOT NULL REFERENCES slots(id) ON DELETE CASCADE, group_id INTEGER NOT NULL, probability REAL NOT NULL,
    how TEXT NOT NULL,  -- 'fitted' | 'sampled' (assigned at fit time) | 'outlier-assigned' | 'added'
    PRIMARY KEY (run_id, slot_id));
"""


@dataclass
class Member:
    """One slot's place in a clustering run (``assign_set`` returns them).

    Attributes
    ----------
    file : str
    slot : int
        Slot number in its file.
    slot_id : int
        The store's vector id of the slot (-1 until it is stored).
    group : int
        The group, -1 for an outlier.
    probability : float
        Membership strength, in [0, 1].
    how : str
        ``"fitted"``, ``"sampled"``, ``"outlier-assigned"`` or ``"added"``.
    spans : list of (float, float)
        Seconds where the slot is heard.
    """

    file: str
    slot: int
    slot_id: int
    group: int
    probability: float
    how: str
    spans: list


def cluster_store(store: Store, clusterer: GraphClusterer | SlotClusterer, assign_outliers: float | None = None,
                  pairs: bool = True) -> int:
    """Cluster a store's active slots and keep the run in the store.

    Parameters
    ----------
    store : Store
        A store with at least 2 active slots.
    clusterer : GraphClusterer or SlotClusterer
        Unfitted; fitted here and its parameters recorded with the run. A ``GraphClusterer``
        (``weighter cluster --on evidence``) is given the store's evidence graph
        (``evidence_graph``); a ``SlotClusterer`` the slot embeddings (and the store's
        ``pair_cosine`` where ``pairs`` says so).
    assign_outliers : float or None
        ``SlotClusterer`` only: also place an outlier in its nearest group when its membership
        strength is at least this (0-1); None: outliers stay outliers.
    pairs : bool, default True
        ``SlotClusterer`` only:
        Where the clusterer has no ``pair_cosine``, use the model's merge cosine (the cosine at
        which its calibration calls two slots one like, recorded in the store): two outliers
        that are each other's most alike slot at that cosine or more become a group of two.

    Returns
    -------
    int
        The run's id (``run_result`` reads it back, ``assign_set`` places new files into it).

    Raises
    ------
    WeighterError
        Fewer than 2 active slots.

    Examples
    --------
    >>> from weighter import SlotClusterer, Store, cluster_store, run_result
    >>> with Store("calls.store") as store:  # doctest: +SKIP
    ...     run = cluster_store(store, SlotClusterer())
    ...     print(run_result(store, run)["run"]["groups"], "groups")
    12 groups
    """
    with store.writing():
        store.db.executescript(SCHEMA)
        ids, emb = store.active_vectors()
        if len(ids) < 2:
            raise WeighterError(f"{store.directory}: {'no active slots' if not len(ids) else 'only 1 active slot'} "
                                "to cluster; clustering needs at least 2 (index more files first)")
        if isinstance(clusterer, GraphClusterer):
            clusterer.fit_graph(evidence_graph(store, ids, emb, clusterer.neighbours), store.owners(ids)[0])
            labels, probs = clusterer.labels_.copy(), clusterer.probabilities_.copy()
            how = np.full(len(ids), "fitted", dtype=object)
            params = clusterer.get_params() | {"method": "graph", "edges": clusterer.edges_,
                                                "one_slot_per_file_dropped": clusterer.duplicates_}
            return _save_run(store, ids, labels, probs, how, clusterer.state(), params)
        merge = store.meta("merge_cosine")
        if pairs and clusterer.pair_cosine is None and merge not in (None, "null"):
            clusterer.set_params(pair_cosine=float(json.loads(merge)))
        clusterer.fit(emb)
        labels, probs = clusterer.labels_.copy(), clusterer.probabilities_.copy()
        how = np.where(np.isin(np.arange(len(ids)), clusterer.sample_), "fitted", "sampled").astype(object)
        if assign_outliers is not None:
            out = np.flatnonzero(labels < 0)
            if len(out):
                lab, strength = clusterer.nearest_group(emb[out])
                take = strength >= assign_outliers
                labels[out[take]], probs[out[take]] = lab[take], strength[take]
                how[out[take]] = "outlier-assigned"
        params = clusterer.get_params() | {"method": "embedding", "min_cluster_size_used": clusterer.min_cluster_size_,
                                            "min_samples_used": clusterer.min_samples_,
                                            "assign_outliers": assign_outliers,
                                            "groups_split": clusterer.groups_split_, "pairs": clusterer.pairs_}
        return _save_run(store, ids, labels, probs, how, clusterer.state(), params)


def evidence_graph(store: Store, ids: np.ndarray, vectors: np.ndarray, neighbours: int) -> EvidenceGraph:
    """The store's evidence graph over its active slots (``ids``, ``vectors``): each slot joined
    to its ``neighbours`` nearest slots of other files by the store's FAISS index, each pair
    weighted by the probability that its files share a like, scored as a query scores it
    (cosine normalised against the cohort; ``Store.pair_probability``; the cosine clipped to
    [0, 1] for a model without calibration).

    Examples
    --------
    >>> ids, vectors = store.active_vectors()  # doctest: +SKIP
    >>> graph = evidence_graph(store, ids, vectors, 10)  # doctest: +SKIP
    """
    from weighter.scoring import normalised

    files = store.owners(ids)[0]
    depth = min(store.vector_count(), neighbours + store.max_slots() + 1)
    cosines, found = store.search(vectors, depth)  # (n, depth): vector ids, -1 where none
    pos = np.clip(np.searchsorted(ids, found), 0, len(ids) - 1)
    idx = np.where((found >= 0) & (ids[pos] == found), pos, -1)  # indices into ids
    idx = other_file_neighbours(idx, files, neighbours)
    safe = np.maximum(idx, 0)
    stats = store.slot_stats(ids)
    scores = cosines if stats is None else normalised(cosines, stats[0][:, None], stats[1][:, None],
                                                      stats[0][safe], stats[1][safe])
    return neighbour_graph(idx, np.where(idx >= 0, _link_probability(store, scores, cosines), 0.0), files)


def _link_probability(store: Store, scores: np.ndarray, cosines: np.ndarray) -> np.ndarray:
    """p of slot pairs as a query gives it (``Store.pair_probability`` of their ``scores``), or
    for a model without calibration their cosine clipped to [0, 1]; shaped as ``scores``."""
    prob = store.pair_probability(scores)
    return np.clip(cosines, 0, 1) if prob is None else prob


def _save_run(store: Store, ids, labels, probs, how, state_arrays: dict, params: dict) -> int:
    """Record a run and its members in one transaction (inside ``store.writing()``); returns its id."""
    state = io.BytesIO()
    np.savez_compressed(state, **state_arrays)
    groups = len(set(labels.tolist()) - {-1})
    db = store.db
    db.execute("BEGIN IMMEDIATE")
    try:
        cur = db.execute("INSERT INTO cluster_runs (created, model_id, params, slots, groups, outlier_share, state) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (time.time(), store.model_id, json.dumps(params), len(ids), groups,
                          float((labels < 0).mean()), state.getvalue()))
        run = cur.lastrowid
        db.executemany("INSERT INTO cluster_members VALUES (?, ?, ?, ?, ?)",
                       [(run, int(i), int(l), float(p), str(h)) for i, l, p, h in zip(ids, labels, probs, how)])
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return run


def latest_run(store: Store, run: int | None = None) -> int:
    """The id of the store's latest clustering run, or check that run ``run`` exists.

    Parameters
    ----------
    store : Store
    run : int or None
        A run id to check; None: the latest.

    Returns
    -------
    int

    Raises
    ------
    WeighterError
        No run (or no run ``run``) in the store.
    """
    if not store.read_only:
        store.db.executescript(SCHEMA)
    return clustering_run(store, run)


def run_result(store: Store, run: int, with_spans: bool = True) -> dict:
    """A clustering run's groups and members, as JSON-ready values.

    Parameters
    ----------
    store : Store
    run : int
        A run id (``cluster_store``, ``latest_run``).
    with_spans : bool, default True
        Give each member the seconds where its slot is heard (reads every member's set).

    Returns
    -------
    dict
        ``{"run": {"id", "created", "model_id", "params", "slots", "groups", "outlier_share",
        "strongest_persistence", "groups_may_be_chance"}, "groups": [{"id", "name", "size",
        "files", "persistence", "members": [...]}], "outliers": [...], "names": [...]}``, groups
        largest first; each member ``{"file", "slot", "probability", "how", "spans"}``; a
        group's ``name`` is the named speaker it carries (None: none), ``names`` where each named
        speaker stands in the run (``weighter.index.speakers.NameInRun``).
    """
    rows = store.db.execute(
        "SELECT m.slot_id, m.group_id, m.probability, m.how, f.path, s.slot FROM cluster_members m "
        "JOIN slots s ON s.id = m.slot_id JOIN files f ON f.id = s.file_id WHERE m.run_id = ? "
        "ORDER BY m.group_id, f.path, s.slot", (run,)).fetchall()
    groups: dict[int, list] = {}
    outliers = []
    for start in range(0, len(rows), SPAN_ROWS):  # members' timelines a block at a time, not every file's set
        part = rows[start:start + SPAN_ROWS]
        timelines = store.slot_timelines([r[0] for r in part]) if with_spans else {}
        for slot_id, group, prob, how, path, slot in part:
            heard = []
            if with_spans:
                _, duration, weighting, rate = timelines[slot_id]
                heard = spans(weighting, rate, duration)
            member = {"file": path, "slot": slot, "probability": round(prob, 4), "how": how, "spans": heard}
            (outliers if group < 0 else groups.setdefault(group, [])).append(member)
    head, names, carried, persistence = _run_head(store, run, len(rows), len(groups), len(outliers))
    return {"run": head,
            "groups": [_group_entry(g, len(m), len({x["file"] for x in m}), carried, persistence) | {"members": m}
                       for g, m in sorted(groups.items(), key=lambda kv: -len(kv[1]))],
            "outliers": outliers, "names": [n.to_dict() for n in names]}


def _group_entry(group: int, size: int, files: int, carried: dict, persistence) -> dict:
    """A group's head in ``run_result`` and ``run_summary``: id, carried name, size, files and
    (where the run keeps it) persistence."""
    entry = {"id": group, "name": carried.get(group), "size": int(size), "files": int(files)}
    return entry if persistence is None else entry | {"persistence": round(float(persistence[group]), 4)}


def _run_head(store: Store, run: int, slots: int, groups: int, outliers: int) -> tuple:
    """``run_result``'s ``run`` entry for a run of ``slots`` members in ``groups`` groups, and what
    its groups take from the store: (run, names in it, group -> name carried, persistence)."""
    meta = store.db.execute("SELECT id, created, model_id, params FROM cluster_runs WHERE id = ?", (run,)).fetchone()
    names = run_names(store, run)
    carried = {n.group: n.name for n in names if n.status == "named"}
    persistence = group_persistence(store, run)
    strongest = float(persistence.max()) if persistence is not None and len(persistence) else None
    head = {"id": meta[0], "created": meta[1], "model_id": meta[2], "params": json.loads(meta[3]),
            "slots": slots, "groups": groups, "outlier_share": round(outliers / slots, 4) if slots else 0.0,
            "strongest_persistence": None if strongest is None else round(strongest, 4),
            # no group stands clearly apart: HDBSCAN makes groups even where nobody recurs
            "groups_may_be_chance": strongest is not None and strongest < LOW_PERSISTENCE}
    return head, names, carried, persistence


def run_summary(store: Store, run: int, examples: int = 4) -> dict:
    """``run_result`` without its members: what a listing of a run's groups needs, in numpy over
    the run's rows rather than a dict per member (a 1M-slot run: 11.5 s and 105 MB of members
    for the web app's groups page before).

    Parameters
    ----------
    store : Store
    run : int
    examples : int, default 4
        Files named per group: those of its most likely members, each once.

    Returns
    -------
    dict
        ``run_result``'s ``run`` and ``names``; ``groups`` as there, largest first, each without
        ``members`` and with ``examples`` (file names); ``outliers``: how many slots are outliers.

    Examples
    --------
    >>> [(g["id"], g["size"], g["examples"]) for g in run_summary(store, 1)["groups"]][:1]  # doctest: +SKIP
    [(0, 12, ['a.flac', 'b.flac', 'd.flac', 'e.flac'])]
    """
    rows = np.fromiter(store.db.execute("SELECT slot_id, group_id, probability FROM cluster_members WHERE run_id = ?",
                                        (run,)), dtype=[("slot", np.int64), ("group", np.int64), ("p", np.float64)])
    files = store.owners(rows["slot"])[0]
    inside = rows["group"] >= 0
    ordered = np.lexsort((-rows["p"], rows["group"]))  # by group, then most likely first
    ordered = ordered[inside[ordered]]
    group_of, file_of = rows["group"][ordered], files[ordered]
    starts = np.flatnonzero(np.concatenate([[True], group_of[1:] != group_of[:-1]])) if len(ordered) else ordered
    bounds = np.append(starts, len(ordered))
    groups = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        shown = list(dict.fromkeys(file_of[lo:hi].tolist()))  # distinct files, most likely member first
        groups.append((int(group_of[lo]), hi - lo, len(np.unique(file_of[lo:hi])), shown[:examples]))
    paths = dict(store._rows_in("SELECT id, path FROM files WHERE id IN ({})", sorted({f for *_, e in groups for f in e})))
    outliers = int((~inside).sum())
    head, names, carried, persistence = _run_head(store, run, len(rows), len(groups), outliers)
    return {"run": head,
            "groups": [_group_entry(g, size, count, carried, persistence)
                       | {"examples": [Path(paths[f]).name for f in shown]}
                       for g, size, count, shown in sorted(groups, key=lambda group: -group[1])],
            "outliers": outliers, "names": [n.to_dict() for n in names]}


def group_persistence(store: Store, run: int) -> np.ndarray | None:
    """Each group's persistence in a run (0-1; see ``clusterer.LOW_PERSISTENCE``).

    Reads that one array of the run's state, not its fitted points.

    Parameters
    ----------
    store : Store
    run : int

    Returns
    -------
    ndarray of shape (n_groups,) or None
        None for runs stored before persistence was kept.
    """
    return _run_state(store, run, ("persistence",)).get("persistence")


def load_clusterer(store: Store, run: int) -> SlotClusterer:
    """The fitted clusterer of a stored embedding run (``SlotClusterer``), ready to ``predict``.

    Parameters
    ----------
    store : Store
    run : int

    Returns
    -------
    SlotClusterer
    """
    return SlotClusterer.from_state(_run_state(store, run))


def _run_state(store: Store, run: int, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The run's stored clusterer state (SlotClusterer.state), or only those of ``keys`` it holds:
    an npz decompresses just the arrays read."""
    blob = store.db.execute("SELECT state FROM cluster_runs WHERE id = ?", (run,)).fetchone()[0]
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return {k: z[k] for k in z.files if keys is None or k in keys}


def assign_set(store: Store, run: int, embedding_set: EmbeddingSet, persist: bool) -> list[Member]:
    """Place a file's active slots into a run's groups, without re-clustering.

    Parameters
    ----------
    store : Store
    run : int
        The run (``latest_run(store)`` for the latest).
    embedding_set : EmbeddingSet
        The file's set (its most confident slot stands in when none is active).
    persist : bool
        Record the placements in the run (the file must be in the store); a slot the run
        already placed keeps its membership.

    Returns
    -------
    list of Member
        One per placed slot; ``group`` -1 where the slot fits no group.

    Examples
    --------
    >>> from weighter import Embedder, Store, assign_set
    >>> from weighter.cluster import latest_run
    >>> with Store("calls.store") as store:  # doctest: +SKIP
    ...     new = Embedder.load().embed(["new.flac"])[0]
    ...     [(m.slot, m.group) for m in assign_set(store, latest_run(store), new, persist=False)]
    [(0, 4), (2, -1)]
    """
    active = np.flatnonzero(embedding_set.active)
    if not len(active):
        active = np.array([int(np.argmax(embedding_set.confidence))])
    state = _run_state(store, run, ("kind", "link_probability", "neighbours"))
    if "kind" in state and str(state["kind"]) == "graph":
        labels, strength = _assign_by_evidence(store, run, embedding_set, active, float(state["link_probability"]),
                                               int(state["neighbours"]))
    else:
        labels, strength = load_clusterer(store, run).predict(embedding_set.embeddings[active])
    members = [Member(embedding_set.path, int(n), -1, int(l), round(float(p), 4), "added", embedding_set.spans(int(n)))
               for n, l, p in zip(active, labels, strength)]
    if persist:
        file_id = store.file_id(embedding_set.path)
        with store.writing():
            store.db.execute("BEGIN")
            for m in members:
                m.slot_id = store.slot_id(file_id, m.slot)
                # a slot this run already placed (fitted, sampled) keeps that membership
                store.db.execute("INSERT OR IGNORE INTO cluster_members VALUES (?, ?, ?, ?, 'added')",
                                 (run, m.slot_id, m.group, m.probability))
            store.db.execute("COMMIT")
    return members


def _assign_by_evidence(store: Store, run: int, embedding_set: EmbeddingSet, active: np.ndarray, link: float,
                        neighbours: int) -> tuple[np.ndarray, np.ndarray]:
    """A graph run's placement of new slots: each joins the group of its most likely grouped
    neighbour among the stored slots of other files (scored as a query scores them), where that
    neighbour's p is at least ``link``; its strength is that p. (labels, strengths) per slot."""
    from weighter.scoring import normalised

    vectors = np.ascontiguousarray(embedding_set.embeddings[active], np.float32)
    depth = min(store.vector_count(), neighbours + store.max_slots() + 1)
    if depth == 0:
        return np.full(len(active), -1), np.zeros(len(active), np.float32)
    cosines, found = store.search(vectors, depth)  # (Q, depth)
    files, _ = store.owners(np.maximum(found, 0))
    own = store.file_id(embedding_set.path)
    stats, query = store.slot_stats(np.maximum(found, 0)), store.query_stats(vectors)
    scores = cosines if stats is None else normalised(cosines, query[0][:, None], query[1][:, None], *stats)
    prob = _link_probability(store, scores, cosines)
    _, group_of = store.slot_groups(np.unique(found[found >= 0]).tolist(), run)
    groups = np.vectorize(lambda i: group_of.get(int(i), -1))(found)
    usable = (found >= 0) & (groups >= 0) & (files != (-1 if own is None else own))
    prob = np.where(usable, prob, -1.0)
    best = prob.argmax(1)
    rows_q = np.arange(len(active))
    p_best, g_best = prob[rows_q, best], groups[rows_q, best]
    joined = p_best >= link
    return np.where(joined, g_best, -1), np.where(joined, p_best, 0.0).astype(np.float32)


def export_csv(result: dict, path: str | Path) -> None:
    """Write a run's members to CSV: group, file, slot, probability, how, spans, group_persistence,
    name (the named speaker the group carries, if any).

    Parameters
    ----------
    result : dict
        As ``run_result`` returns it; outliers are written with group -1.
    path : str or Path
        The CSV file to write.
    """
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["group", "file", "slot", "probability", "how", "spans", "group_persistence", "name"])
        for g in result["groups"]:
            for m in g["members"]:
                writer.writerow([g["id"], m["file"], m["slot"], m["probability"], m["how"],
                                 ";".join(f"{a}-{b}" for a, b in m["spans"]), g.get("persistence", ""), g.get("name") or ""])
        for m in result["outliers"]:
            writer.writerow([-1, m["file"], m["slot"], m["probability"], m["how"],
                             ";".join(f"{a}-{b}" for a, b in m["spans"]), "", ""])


MAP_POINTS = 20_000  # slots a map draws at most (a seeded draw): 1M points took 41 s to draw
MAP_LABELS = 40  # groups a map names (the largest): 2000 labels are a smudge


def draw_map(store: Store, run: int, path: str | Path) -> None:
    """Draw a 2-D map of a run's slots, coloured by group, to a PNG file.

    Drawn from the space the run clustered in (its PCA, whitening and unit length): t-SNE up to
    3000 slots, else that space's first two principal directions. A run of more than
    ``MAP_POINTS`` slots is drawn from a seeded draw of that many; the ``MAP_LABELS`` largest
    groups are named.

    Parameters
    ----------
    store : Store
    run : int
    path : str or Path
        The image file to write (matplotlib picks the format by its suffix).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    members = np.fromiter(store.db.execute("SELECT slot_id, group_id FROM cluster_members WHERE run_id = ? "
                                           "ORDER BY slot_id", (run,)), dtype=[("slot", np.int64), ("group", np.int64)])
    total = len(members)
    if total > MAP_POINTS:
        members = members[np.sort(np.random.default_rng(0).choice(total, MAP_POINTS, replace=False))]
    emb = store.slot_embeddings(members["slot"])
    state = _run_state(store, run, ("kind",))
    if not ("kind" in state and str(state["kind"]) == "graph"):  # an embedding run: its own space
        emb = load_clusterer(store, run).transform(emb)
    labels = members["group"]
    if 10 < len(emb) <= 3000:
        from sklearn.manifold import TSNE

        xy = TSNE(2, perplexity=min(30, len(emb) // 4), init="pca", random_state=0).fit_transform(emb)
        how = "t-SNE"
    else:
        centred = emb - emb.mean(0)
        xy = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
        how = "PCA"
    fig, ax = plt.subplots(figsize=(8, 7), dpi=110)
    noise = labels < 0
    ax.scatter(xy[noise, 0], xy[noise, 1], s=8, c="lightgrey", label="outliers")
    groups, index, sizes = np.unique(labels[~noise], return_inverse=True, return_counts=True)
    cmap = plt.get_cmap("tab20")
    ax.scatter(xy[~noise, 0], xy[~noise, 1], s=14 if len(emb) <= 3000 else 4, color=cmap(index % 20))
    for k in np.argsort(-sizes, kind="stable")[:MAP_LABELS]:
        ax.annotate(str(groups[k]), xy[~noise][index == k].mean(0), fontsize=8, weight="bold")
    shown = f"{len(emb)} of {total} slots" if total > len(emb) else f"{total} slots"
    ax.set_title(f"{shown}, {len(groups)} groups, {noise.mean():.0%} outliers ({how} map)")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
