"""Named speakers: a person enrolled from clips of their voice, or a discovered group given a name.

A speaker is a name and a set of reference embeddings in the store's SQLite database (tables
``speakers`` and ``speaker_refs``; every change is one transaction under the store's write
lock): the most confident active slot of each enrolment clip, or the slots of a named group.
Searching for a speaker is a set query (``weighter.index.query``) whose slots are the mean of
its references and the slots of the groups it named (``speaker_set``), so a file scores its best
pair and gets a ``p`` and spans exactly as a file query does.

Names are not written on groups. A clustering run's group carries a name when it holds most of
that speaker's anchor slots: the stored slots its references were taken from, or, for a
speaker enrolled from clips only, the stored slots its search finds at p >= 0.5. A name thus
follows its voice into every new run, and a name whose slots split over groups or vanish is
reported (``run_names``), never moved silently.
"""

from __future__ import annotations

import csv
import re
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from weighter.embedding_set import EmbeddingSet, spans
from weighter.errors import AudioError, StoreError, WeighterError
from weighter.index.query import Match, query_store
from weighter.index.store import Store
from weighter.scoring import normalised

ANCHOR_P = 0.5  # a clip-enrolled speaker's anchors: stored slots its search finds at least this likely
LABEL_P = 0.5  # export: a slot outside any named group is that speaker's at least this likely
MAX_QUERY_REFS = 64  # a named group's slots a speaker search uses beside the mean (the most recent ones)
_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,100}$")


@dataclass
class Speaker:
    """A named speaker kept in a store.

    Attributes
    ----------
    name : str
    id : int
        Its row id (stable across renames).
    created : float
        Unix time of enrolment.
    references : int
        Reference embeddings (one per enrolment clip, one per slot of a named group).
    seconds : float
        Speech behind the references, in seconds (where each is heard).
    origins : list of str
        Where the references came from: ``"FILE"``, ``"FILE@START-END"`` or ``"run R group G"``.

    Examples
    --------
    >>> [s.name for s in list_speakers(store)]  # doctest: +SKIP
    ['branch manager', 'caller 7']
    """

    name: str
    id: int
    created: float
    references: int
    seconds: float
    origins: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict (``weighter speaker list --json``)."""
        return asdict(self)


@dataclass
class NameInRun:
    """Where a name stands in a clustering run (``run_names``).

    Attributes
    ----------
    name : str
    status : str
        ``"named"`` (group ``group`` holds most of its anchors and carries the name), ``"split"``
        (no group holds most of them), ``"gone"`` (none of its anchors is in a group of the
        run: removed files, outliers, or no match), or ``"contested"`` (the group that holds most
        of them carries another name, which holds more of it).
    group : int or None
        The group holding most of its anchors.
    anchors : int
        Its anchor slots present in the run.
    share : float
        Share of those in ``group`` (0-1).
    groups : dict
        Group -> anchors in it (-1: outliers).
    """

    name: str
    status: str
    group: int | None
    anchors: int
    share: float
    groups: dict

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return asdict(self) | {"groups": {str(g): n for g, n in self.groups.items()}}


def parse_clip(text: str) -> tuple[str, tuple[float, float] | None]:
    """An enrolment clip given as ``FILE`` or ``FILE@START-END`` (seconds).

    Parameters
    ----------
    text : str

    Returns
    -------
    path : str
    span : (float, float) or None

    Raises
    ------
    WeighterError
        ``@`` followed by something that is not ``START-END`` with START < END.

    Examples
    --------
    >>> parse_clip("calls/a.flac@12.5-30")
    ('calls/a.flac', (12.5, 30.0))
    >>> parse_clip("calls/a.flac")
    ('calls/a.flac', None)
    """
    path, at, span = text.rpartition("@")
    if not at or Path(text).exists():
        return text, None
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*-\s*(\d+(?:\.\d*)?)\s*", span)
    if match is None:
        raise WeighterError(f"{text}: the span after '@' must be START-END in seconds, e.g. {path}@12.5-30")
    start, end = float(match[1]), float(match[2])
    if end <= start:
        raise WeighterError(f"{text}: the span ends ({end:g} s) before it starts ({start:g} s)")
    return path, (start, end)


def check_name(name: str) -> str:
    """A speaker name as stored: 1-100 characters, no control characters, no spaces around it.

    Raises
    ------
    WeighterError
        An empty name, one with control characters, or one over 100 characters.

    Examples
    --------
    >>> check_name("branch manager")
    'branch manager'
    """
    if name != name.strip() or not _NAME.match(name):
        raise WeighterError(f"{name!r}: a speaker name must be 1 to 100 printable characters without spaces around it")
    if re.fullmatch(r"(group|unknown)_\d+", name):
        raise WeighterError(f"{name!r}: names like group_3 and unknown_12 label unnamed voices in exports; pick another")
    return name


def list_speakers(store: Store) -> list[Speaker]:
    """The store's named speakers, by name.

    Parameters
    ----------
    store : Store

    Returns
    -------
    list of Speaker
        Empty for a store without speakers (also one made before named speakers existed).

    Examples
    --------
    >>> [(s.name, s.references) for s in list_speakers(store)]  # doctest: +SKIP
    [('Alice', 2)]
    """
    if not _has_tables(store):
        return []
    rows = store.db.execute("SELECT id, name, created FROM speakers ORDER BY name").fetchall()
    refs: dict[int, list] = {}
    for speaker_id, origin, seconds in store.db.execute("SELECT speaker_id, origin, seconds FROM speaker_refs "
                                                        "ORDER BY id"):
        refs.setdefault(speaker_id, []).append((origin, seconds))
    return [Speaker(name, i, created, len(refs.get(i, [])), round(sum(s for _, s in refs.get(i, [])), 2),
                    list(dict.fromkeys(o for o, _ in refs.get(i, []))))
            for i, name, created in rows]


def speakers_json(store: Store) -> dict:
    """The named speakers and where each name stands in the latest clustering run, as
    JSON-ready values (``weighter speaker list --json``, the web app's ``/api/speakers``).

    Returns
    -------
    dict
        ``{"speakers": [Speaker fields, ...], "run": int or None, "names": [NameInRun fields]}``.

    Examples
    --------
    >>> speakers_json(store)["names"][0]["status"]  # doctest: +SKIP
    'named'
    """
    run = store.run_id()
    return {"speakers": [s.to_dict() for s in list_speakers(store)], "run": run,
            "names": [n.to_dict() for n in run_names(store, run)] if run is not None else []}


def get_speaker(store: Store, name: str) -> Speaker:
    """One named speaker.

    Raises
    ------
    WeighterError
        No speaker of that name.

    Examples
    --------
    >>> get_speaker(store, "Alice").references  # doctest: +SKIP
    2
    """
    for speaker in list_speakers(store):
        if speaker.name == name:
            return speaker
    known = ", ".join(s.name for s in list_speakers(store)[:10]) or "none yet"
    raise WeighterError(f"{name!r}: no speaker of that name in {store.directory} (known: {known})",
                        cli_hint=f"`weighter speaker list --store {store.directory}`")


def reference_slot(clip: EmbeddingSet) -> int:
    """The slot of an enrolment clip that holds its speaker: the most confident active one.

    Raises
    ------
    AudioError
        No slot is active: no voice was heard in the clip.

    Examples
    --------
    >>> reference_slot(Embedder.load().embed_clip("alice.flac"))  # doctest: +SKIP
    0
    """
    active = np.flatnonzero(clip.active)
    if not len(active):
        raise AudioError(clip.path, "no voice heard in it (no active slot); enrol a clip where the person speaks")
    return int(active[np.argmax(clip.confidence[active])])


def enrol(store: Store, name: str, clips: list[EmbeddingSet]) -> tuple[Speaker, bool]:
    """Enrol a speaker from clips of that person alone, or refine one with more clips.

    Each clip's most confident active slot becomes a reference (``reference_slot``); all are
    written in one transaction, so a clip in which no voice is heard leaves the store unchanged.

    Parameters
    ----------
    store : Store
        A writable store that holds files (its model must have made the clips' sets).
    name : str
        The speaker's name (``check_name``); an existing name gains the clips.
    clips : list of EmbeddingSet
        ``Embedder.embed_clip`` of each clip.

    Returns
    -------
    speaker : Speaker
    created : bool
        True for a new speaker, False where the name existed and was refined.

    Raises
    ------
    WeighterError
        No clips, a bad name, an empty store, a clip of another model (``StoreError``), or a
        clip with no voice in it (``AudioError``).

    Examples
    --------
    >>> clip = Embedder.load().embed_clip("calls/a.flac", (12.5, 30))  # doctest: +SKIP
    >>> enrol(store, "Alice", [clip])[1]  # doctest: +SKIP
    True
    """
    check_name(name)
    if not clips:
        raise WeighterError(f"{name!r}: no enrolment clips given")
    if store.model_id is None:
        raise StoreError(f"{store.directory}: the store holds no files yet; index the corpus before enrolling "
                         "speakers", cli_hint="`weighter index build`")
    rows = []
    for clip in clips:
        store.check_model(clip.model_id)
        slot = reference_slot(clip)
        heard = sum(b - a for a, b in clip.spans(slot)) or clip.duration
        rows.append((clip.path, None, clip.embeddings[slot].astype(np.float32).tobytes(), round(heard, 2)))
    return _write(store, name, rows, must_be_new=False)


def name_group(store: Store, group: int, name: str, run: int | None = None) -> Speaker:
    """Name a discovered group: its slots in the run become a new speaker's references.

    Parameters
    ----------
    store : Store
    group : int
        A group id of the run (``weighter cluster``).
    name : str
        A name no speaker has yet (``check_name``).
    run : int or None
        The clustering run; None: the latest.

    Returns
    -------
    Speaker

    Raises
    ------
    WeighterError
        No clustering run (or no run ``run``), no group ``group`` in it, a taken name, or a
        group that already carries a name.

    Examples
    --------
    >>> name_group(store, 3, "branch manager").references  # doctest: +SKIP
    14
    """
    check_name(name)
    run = clustering_run(store, run)
    rows = store.db.execute("SELECT s.id, s.embedding, s.weightings, s.timeline_rate, f.duration FROM cluster_members m "
                            "JOIN slots s ON s.id = m.slot_id JOIN files f ON f.id = s.file_id "
                            "WHERE m.run_id = ? AND m.group_id = ? AND ? >= 0", (run, group, group)).fetchall()
    if not rows:
        raise WeighterError(f"{store.directory}: run {run} has no group {group}",
                            cli_hint=f"`weighter cluster --store {store.directory} --run {run}` lists its groups")
    carried = group_names(store, run).get(group)
    if carried is not None:
        raise WeighterError(f"group {group} of run {run} is already named {carried!r}; rename that speaker instead",
                            cli_hint=f"`weighter speaker rename {carried!r} NEW --store {store.directory}`")
    refs = [(f"run {run} group {group}", int(i), emb,
             round(sum(b - a for a, b in spans(np.frombuffer(w, np.float16), rate, dur)), 2))
            for i, emb, w, rate, dur in rows]
    return _write(store, name, refs, must_be_new=True)[0]


def rename(store: Store, old: str, new: str) -> Speaker:
    """Give a speaker another name.

    Raises
    ------
    WeighterError
        No speaker ``old``, or ``new`` is taken or not a valid name.

    Examples
    --------
    >>> rename(store, "caller 7", "Bob").name  # doctest: +SKIP
    'Bob'
    """
    check_name(new)
    with store.writing():
        speaker = get_speaker(store, old)
        if new != old and any(s.name == new for s in list_speakers(store)):
            raise WeighterError(f"{new!r}: a speaker of that name exists already; pick another name")
        store.db.execute("UPDATE speakers SET name = ? WHERE id = ?", (new, speaker.id))
    _forget_names()
    return get_speaker(store, new)


def remove(store: Store, name: str) -> Speaker:
    """Remove a named speaker and its references (the files and their slots stay).

    Raises
    ------
    WeighterError
        No speaker of that name.

    Examples
    --------
    >>> remove(store, "Bob").references  # doctest: +SKIP
    3
    """
    with store.writing():
        speaker = get_speaker(store, name)
        store.db.execute("DELETE FROM speakers WHERE id = ?", (speaker.id,))  # its references go too (CASCADE)
    _forget_names()
    return speaker


def _write(store: Store, name: str, refs: list[tuple], must_be_new: bool) -> tuple[Speaker, bool]:
    """Insert the speaker (unless it exists and may be refined) and its references
    ``(origin, slot_id, embedding bytes, seconds)`` in one transaction."""
    with store.writing():
        db = store.db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT id FROM speakers WHERE name = ?", (name,)).fetchone()
            if row is not None and must_be_new:
                raise WeighterError(f"{name!r}: a speaker of that name exists already; pick another name, or add "
                                    "clips to it with enrol", cli_hint=f"`weighter speaker enrol {name!r} FILE...`")
            speaker_id = row[0] if row else db.execute("INSERT INTO speakers (name, created) VALUES (?, ?)",
                                                       (name, time.time())).lastrowid
            now = time.time()
            db.executemany("INSERT INTO speaker_refs (speaker_id, origin, slot_id, embedding, seconds, added) "
                           "VALUES (?, ?, ?, ?, ?, ?)", [(speaker_id, o, s, e, float(sec), now) for o, s, e, sec in refs])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    _forget_names()
    return get_speaker(store, name), row is None


def _references(store: Store, speaker_id: int) -> tuple[np.ndarray, np.ndarray]:
    """A speaker's references, oldest first: embeddings (R, E) float32, slot ids (R,) (-1: a clip)."""
    rows = store.db.execute("SELECT embedding, COALESCE(slot_id, -1) FROM speaker_refs WHERE speaker_id = ? "
                            "ORDER BY id", (speaker_id,)).fetchall()
    emb = np.stack([np.frombuffer(r[0], np.float32) for r in rows]) if rows else np.zeros((0, 256), np.float32)
    return emb, np.array([r[1] for r in rows], np.int64)


def speaker_set(store: Store, name: str) -> EmbeddingSet:
    """A speaker as a query set, all slots active, path ``"speaker:NAME"``: slot 0 the unit
    mean of all its references; then the references taken from a named group's slots (the
    most recent ``MAX_QUERY_REFS``), so that the files the group named rank first. Enrolment
    clips count only through the mean: on the train-split speakers (benchmarks/enrolment.py,
    docs/speakers.md), searching with each clip beside the mean lowered mAP with 2 and 3
    short clips (0.659 to 0.634 and 0.631 to 0.585 through recording channels).

    Examples
    --------
    >>> speaker_set(store, "Alice").embeddings.shape  # doctest: +SKIP
    (1, 256)
    """
    speaker = get_speaker(store, name)
    refs, slots = _references(store, speaker.id)
    mean = refs.mean(0)
    members = refs[slots >= 0][-MAX_QUERY_REFS:]
    vectors = np.concatenate([mean[None] / max(float(np.linalg.norm(mean)), 1e-9), members]).astype(np.float32)
    n = len(vectors)
    return EmbeddingSet(f"speaker:{name}", vectors, np.ones(n, np.float32), np.ones(n, bool),
                        np.zeros((n, 1), np.float32), 10.0, 0.0, store.model_id or "")


def query_speaker(store: Store, name: str, k: int = 10, min_probability: float | None = None) -> list[Match]:
    """The stored files where a named speaker is heard, best first.

    Parameters
    ----------
    store : Store
    name : str
    k : int, default 10
        How many files at most.
    min_probability : float or None
        Leave out files whose ``p`` is lower (a model without calibration gives no ``p`` and
        leaves none out).

    Returns
    -------
    list of Match
        As ``query_store`` gives them (``stored_spans``: where the speaker is heard); query
        slot 0 is the references' mean, the others named groups' slots (``speaker_set``).

    Examples
    --------
    >>> for m in query_speaker(store, "Alice", k=5):  # doctest: +SKIP
    ...     print(m.file, m.probability, m.stored_spans)
    calls/b.flac 0.97 [(3.1, 9.8)]
    """
    matches = query_store(store, speaker_set(store, name), k=k, exclude_self=False)
    if min_probability is None:
        return matches
    return [m for m in matches if m.probability is None or m.probability >= min_probability]


def slot_probabilities(store: Store, name: str, slot_ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """P(slot is this speaker) for stored slots (``slot_ids`` (S,), their ``vectors`` (S, E)):
    the best over the speaker's query slots of the pair's calibrated p, scored as a query
    scores it; the clipped cosine for a model without calibration."""
    return _slot_probabilities(store, speaker_set(store, name), slot_ids, vectors)


def _slot_probabilities(store: Store, query: EmbeddingSet, slot_ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``slot_probabilities`` for a speaker's query set (``speaker_set``) read once."""
    cosines = query.embeddings @ vectors.T  # (Q, S)
    qstats, sstats = store.query_stats(query.embeddings), store.slot_stats(slot_ids)
    scores = cosines if qstats is None else normalised(cosines, qstats[0][:, None], qstats[1][:, None],
                                                       sstats[0][None], sstats[1][None])
    prob = store.pair_probability(scores.max(0))
    return np.clip(cosines.max(0), 0, 1) if prob is None else np.asarray(prob)


# -- names in clustering runs -------------------------------------------------------------
_NAMES_CACHE: dict = {}  # (db, run, members, speakers' state) -> (group -> name, [NameInRun])
_CARRYING = threading.local()  # the key whose names this thread is working out


def _forget_names() -> None:
    _NAMES_CACHE.clear()


def run_names(store: Store, run: int) -> list[NameInRun]:
    """Where each named speaker stands in a clustering run: the group that carries its name,
    or why none does (``NameInRun.status``).

    Parameters
    ----------
    store : Store
    run : int

    Returns
    -------
    list of NameInRun
        One per speaker, by name.

    Examples
    --------
    >>> [(n.name, n.status, n.group) for n in run_names(store, 2)]  # doctest: +SKIP
    [('Alice', 'named', 4), ('Bob', 'split', 1)]
    """
    return _names(store, run)[1]


def group_names(store: Store, run: int | None) -> dict[int, str]:
    """Group -> the name it carries in a run (``run_names``); empty without speakers or run.

    Examples
    --------
    >>> group_names(store, 2)  # doctest: +SKIP
    {4: 'Alice'}
    """
    if run is None or not _has_tables(store):
        return {}
    if getattr(_CARRYING, "key", None) is not None:  # the anchors' own search: never kept
        return _names(store, run)[0]
    return store.cached(("group_names", run), lambda: _names(store, run)[0])


def _names(store: Store, run: int) -> tuple[dict[int, str], list[NameInRun]]:
    if not _has_tables(store):
        return {}, []
    state = state_token(store)
    if state is None:
        return {}, []
    members = store.db.execute("SELECT COUNT(*) FROM cluster_members WHERE run_id = ?", (run,)).fetchone()[0]
    key = (str(store.db_path.resolve()), run, members, state, store.generation)
    if key not in _NAMES_CACHE:
        if getattr(_CARRYING, "key", None) == key:  # the anchors' own search, while carrying names: none yet
            return {}, []
        _CARRYING.key = key
        try:
            names = _carry_names(store, run)
        finally:
            _CARRYING.key = None
        if len(_NAMES_CACHE) > 64:
            _NAMES_CACHE.clear()
        _NAMES_CACHE[key] = names
    return _NAMES_CACHE[key]


def _carry_names(store: Store, run: int) -> tuple[dict[int, str], list[NameInRun]]:
    """Each speaker's anchors counted over the run's groups; the majority group carries the
    name unless a name with more anchors there holds it."""
    placed: list[NameInRun] = []
    for speaker in list_speakers(store):
        _, ref_slots = _references(store, speaker.id)
        anchors = ref_slots[ref_slots >= 0]
        if not len(anchors):  # enrolled from clips only: the slots its search finds likely enough
            found = query_speaker(store, speaker.name, k=50, min_probability=ANCHOR_P)
            anchors = np.array([store.slot_id(store.file_id(m.file), m.stored_slot) for m in found], np.int64)
        _, groups = store.slot_groups(anchors.tolist(), run)
        counts: dict[int, int] = {}
        for slot in anchors.tolist():
            if slot in groups:
                counts[groups[slot]] = counts.get(groups[slot], 0) + 1
        present = sum(counts.values())
        grouped = {g: n for g, n in counts.items() if g >= 0}
        best = max(grouped, key=lambda g: (grouped[g], -g)) if grouped else None
        share = grouped[best] / present if best is not None else 0.0
        status = "gone" if best is None else ("named" if share > 0.5 else "split")
        placed.append(NameInRun(speaker.name, status, best, present, round(share, 4), dict(sorted(counts.items()))))
    names: dict[int, str] = {}
    for entry in sorted((p for p in placed if p.status == "named"), key=lambda p: -p.groups[p.group]):
        if entry.group in names:
            entry.status = "contested"
        else:
            names[entry.group] = entry.name
    return names, placed


# -- who speaks when: export ------------------------------------------------------------
@dataclass
class Turn:
    """One span of a speaker in a file (``speaker_turns``).

    Attributes
    ----------
    file : str
    speaker : str
        The name where known, else ``group_G`` (a group of the run) or ``unknown_S`` (slot id S:
        an outlier, or a slot with no run).
    start, end : float
        Seconds.
    probability : float or None
        P(the slot is that speaker) for a name, the group membership for ``group_G``, None
        for ``unknown_S``.
    """

    file: str
    speaker: str
    start: float
    end: float
    probability: float | None


def speaker_turns(store: Store, run: int | None = None) -> list[Turn]:
    """Who speaks when in every stored file: each active slot's spans, labelled.

    A slot of a group that carries a name takes that name; any other slot takes the named
    speaker it is at least ``LABEL_P`` likely to be (the most likely); else its group in the
    run (``group_G``); else ``unknown_S``. ``iter_speaker_turns`` gives the same turns one
    file at a time, in memory that does not grow with the store.

    Parameters
    ----------
    store : Store
    run : int or None
        The clustering run whose groups label slots; None: the latest (or none, where the
        store was never clustered).

    Returns
    -------
    list of Turn
        By file, then start.

    Examples
    --------
    >>> [(t.speaker, t.start, t.end) for t in speaker_turns(store)][:2]  # doctest: +SKIP
    [('Alice', 0.0, 4.2), ('group_3', 4.2, 9.0)]
    """
    return sorted(iter_speaker_turns(store, run), key=lambda t: (t.file, t.start, t.speaker))


# Active slots labelled at a time: their vectors (8 MB) and timelines (48 MB of 5-minute
# files, 590 MB of hour-long ones).
EXPORT_CHUNK = 8192


def iter_speaker_turns(store: Store, run: int | None = None, chunk: int = EXPORT_CHUNK, progress: bool = False):
    """``speaker_turns`` one file at a time: files in the order they were stored, each file's
    turns by start. Reads ``chunk`` active slots at a time inside one read transaction, so a
    store of any size is exported in the same memory and a writer's commit meanwhile is not
    seen.

    Parameters
    ----------
    store : Store
    run : int or None
        As ``speaker_turns``.
    chunk : int, default EXPORT_CHUNK
        Active slots read and labelled at a time.
    progress : bool, default False
        A progress bar of slots on stderr.

    Yields
    ------
    Turn

    Examples
    --------
    >>> for turn in iter_speaker_turns(store):  # doctest: +SKIP
    ...     print(turn.file, turn.speaker, turn.start, turn.end)
    calls/a.flac Alice 0.0 4.2
    """
    from tqdm import tqdm

    db = store.db
    opened = not db.in_transaction
    if opened:
        db.execute("BEGIN")  # one snapshot of the store for every chunk
    try:
        run_id = store.run_id() if run is None else run
        named = group_names(store, run_id)
        speakers = list_speakers(store)
        queries = [speaker_set(store, s.name) for s in speakers]
        index = {s.name: k for k, s in enumerate(speakers)}
        source = store.slot_source(chunk)
        file_turns, current = [], None  # the turns of the file being read, which a chunk may end inside
        by_start = lambda t: (t.start, t.speaker)  # noqa: E731
        with tqdm(total=len(source), desc="export", unit="slot", disable=not progress) as bar:
            for first, vectors in source.chunks():
                ids = source.ids[first:first + len(vectors)]
                members = {} if run_id is None else {int(a): (int(b), float(c)) for a, b, c in db.execute(
                    "SELECT slot_id, group_id, probability FROM cluster_members WHERE run_id = ? AND slot_id "
                    "BETWEEN ? AND ?", (int(run_id), int(ids[0]), int(ids[-1])))}
                prob = np.stack([_slot_probabilities(store, query, ids, vectors) for query in queries]) if queries \
                    else np.zeros((0, len(ids)))
                timelines = store.slot_timelines(ids.tolist())
                for col, slot_id in enumerate(ids.tolist()):
                    path, duration, weighting, rate = timelines[slot_id]
                    if path != current:  # a file's slots are consecutive ids
                        yield from sorted(file_turns, key=by_start)
                        file_turns, current = [], path
                    group, membership = members.get(slot_id, (-1, 0.0))
                    if group in named:
                        label, p = named[group], float(prob[index[named[group]], col])
                    elif len(prob) and prob[:, col].max() >= LABEL_P:
                        best = int(prob[:, col].argmax())
                        label, p = speakers[best].name, float(prob[best, col])
                    elif group >= 0:
                        label, p = f"group_{group}", membership
                    else:
                        label, p = f"unknown_{slot_id}", None
                    p = None if p is None else round(p, 4)
                    file_turns += [Turn(path, label, a, b, p) for a, b in spans(weighting, rate, duration)]
                bar.update(len(ids))
        yield from sorted(file_turns, key=by_start)
    finally:
        if opened and db.in_transaction:
            db.execute("COMMIT")


def write_turns(turns, rttm: str | Path | None = None, csv_path: str | Path | None = None) -> dict:
    """Write turns (any iterable, read once) as RTTM ``SPEAKER`` lines and/or CSV rows (file,
    speaker, start, end, p; p empty where unknown), in one pass.

    RTTM's file id is the file's stem, and names with whitespace get ``_`` (RTTM fields are
    split on whitespace).

    Returns
    -------
    dict
        ``{"turns": n, "files": files with a turn, "named": names among the speakers}``; files
        are counted where the file changes from one turn to the next, as
        ``iter_speaker_turns`` gives them.

    Examples
    --------
    >>> write_turns(iter_speaker_turns(store), rttm="who.rttm", csv_path="who.csv")  # doctest: +SKIP
    {'turns': 1840, 'files': 120, 'named': 2}
    """
    count, files, named, last = 0, 0, set(), None
    with open(rttm, "w") if rttm else nullcontext() as rttm_out, \
            open(csv_path, "w", newline="") if csv_path else nullcontext() as csv_out:
        table = csv.writer(csv_out, lineterminator="\n") if csv_path else None
        if table:
            table.writerow(["file", "speaker", "start", "end", "p"])
        for t in turns:
            count += 1
            if t.file != last:
                files, last = files + 1, t.file
            if not t.speaker.startswith(("group_", "unknown_")):
                named.add(t.speaker)
            if rttm:
                uri, who = re.sub(r"\s", "_", Path(t.file).stem), re.sub(r"\s", "_", t.speaker)
                rttm_out.write(f"SPEAKER {uri} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> {who} <NA> <NA>\n")
            if table:
                table.writerow([t.file, t.speaker, t.start, t.end, "" if t.probability is None else t.probability])
    return {"turns": count, "files": files, "named": len(named)}


def write_rttm(turns, path: str | Path) -> None:
    """Write turns as RTTM ``SPEAKER`` lines (``write_turns``).

    Examples
    --------
    >>> write_rttm(speaker_turns(store), "corpus.rttm")  # doctest: +SKIP
    """
    write_turns(turns, rttm=path)


def write_csv(turns, path: str | Path) -> None:
    """Write turns as CSV: file, speaker, start, end, p (empty where unknown; ``write_turns``).

    Examples
    --------
    >>> write_csv(speaker_turns(store), "corpus.csv")  # doctest: +SKIP
    """
    write_turns(turns, csv_path=path)


# -- helpers ---------------------------------------------------------------------------
def _has_tables(store: Store) -> bool:
    """Whether the store has the speaker tables (a read-only store made before them has not)."""
    return store.cached("speaker_tables", lambda: store.db.execute(
        "SELECT 1 FROM sqlite_master WHERE name = 'speaker_refs'").fetchone() is not None)


def state_token(store: Store) -> tuple | None:
    """A value that changes whenever a speaker or reference is added, renamed or removed; None
    for a store without speakers (caches of names key on it)."""
    if not _has_tables(store):
        return None
    state = store.db.execute("SELECT COUNT(*), COALESCE(MAX(id), 0), (SELECT group_concat(id || ':' || name, '/') "
                             "FROM speakers) FROM speaker_refs").fetchone()
    return None if state[2] is None else tuple(state)


def clustering_run(store: Store, run: int | None = None) -> int:
    """The store's latest clustering run, or ``run`` after checking that it exists.

    Raises
    ------
    WeighterError
        The store was never clustered, or has no run ``run``.

    Examples
    --------
    >>> clustering_run(store)  # doctest: +SKIP
    3
    """
    found = store.run_id(run)
    if found is None:
        raise WeighterError(f"{store.directory}: no clustering run{'' if run is None else f' {run}'} "
                            "(cluster the store first: cluster_store)",
                            cli_hint=f"`weighter cluster --store {store.directory}`")
    return found
