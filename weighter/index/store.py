"""The store: an SQLite database of files and slots plus a FAISS index of the active slots.

Layout of a store directory::

    store.sqlite        files (path, content hash, duration), slots (confidence, active,
                        embedding, weightings timeline), the model's score cohort, meta
                        (model id, index type and tuned nprobe, score share, generation,
                        base generation and the list of deltas), named speakers and their
                        reference embeddings (weighter.index.speakers)
    vectors-<B>.faiss   the base FAISS index of the active slot embeddings, ids = slots.id
    template-<B>.faiss  the same kind of index, trained and empty: what deltas are added to
    scores-<B>.npz      score normalisation (weighter.scoring): every base slot's mean and
                        spread against the model's score cohort (kept in SQLite)
    delta-<G>.npz       one write since the base: its new active slots (ids, vectors, score
                        statistics) and the ids it removed (tombstones)
    write.lock          held (flock) by the one process writing

SQLite is the source of truth: the index files can always be rebuilt from it. A write goes:
take the lock; write its files under a new generation number G+1 (a delta, or a new base
holding everything when the deltas would pass DELTA_SHARE of the base); then one SQLite
transaction changes the rows *and* sets meta's generation (and base, and delta list); then
the files no longer listed are deleted. Killed before the commit, the store is in its old
state (the orphan files are removed on the next write); after it, in its new state. Readers
never take the lock: SQLite's WAL lets them read during a write, the files they were told
about stay until the commit that replaces them, and a reader that holds generation G of the
same base reads only the deltas since (``faiss_index.LiveIndex``).

This module keeps SQLite and the generations; ``weighter.index.faiss_index`` builds, tunes and
reads the FAISS index, ``weighter.index.score_stats`` writes, reads and looks up the scores file.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import shutil
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from weighter.embedding_set import EmbeddingSet
from weighter.errors import StoreError
from weighter.index import faiss_index, score_stats
from weighter.index.results import ApplyResult, StoreInfo
# Re-exported: importers name these as weighter.index.store's.
from weighter.index.faiss_index import (EXACT_LIMIT, IVF_RECALL, MIN_NPROBE, TWO_LEVEL_FROM,  # noqa: F401
                                        _exact_top, auto_factory, tuned_nprobe, tuning_slots)
from weighter.index.score_stats import DENSE_LIMIT  # noqa: F401
from weighter.scoring import LEGACY_TOP_SHARE, MIN_COHORT, Cohort, cohort_stats

STORE_FORMAT = 3  # 2: slot ids never reused; 3: a slot's id encodes its file and slot number
SLOT_BITS = 12  # slot id = file id * 2**SLOT_BITS + slot number: a FAISS hit names its file with no lookup
MAX_SLOTS = 1 << SLOT_BITS
_CHUNK = 900  # values bound in one IN (...): SQLite's limit on bound parameters is 999 in old builds
# A write appends a delta (its vectors, ids and removals) while the deltas since the base hold
# at most DELTA_SHARE of the base's vectors; then the next write makes a new base holding them.
DELTA_SHARE = 0.25
DELTA_MIN_BASE = 20_000  # smaller stores rewrite their base at every write (it costs less than a delta's reading)
MAX_DELTAS = 64  # files a reader reads on opening a store, at most
# A reader memory-maps a base index larger than a quarter of this machine's RAM instead of
# reading it: it opens at once and holds only the lists its probes touch (page cache), at about
# twice a search's time (1M slots, warm: 2.4-2.6 ms against 1.15 ms for the same 8-slot searches).
MAP_FROM_BYTES = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
# Readers map this much of store.sqlite (SQLite caps it at about 2 GiB): a query's 10 result rows
# at 1M slots, 93 -> 74 us.
READ_MAP_BYTES = 1 << 31

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL UNIQUE, content_hash TEXT NOT NULL,
    duration REAL NOT NULL, added REAL NOT NULL);
CREATE TABLE IF NOT EXISTS slots (
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    slot INTEGER NOT NULL, confidence REAL NOT NULL, active INTEGER NOT NULL,
    embedding BLOB NOT NULL, weightings BLOB NOT NULL, timeline_rate REAL NOT NULL,
    UNIQUE (file_id, slot));
CREATE INDEX IF NOT EXISTS slots_file ON slots(file_id);
CREATE INDEX IF NOT EXISTS slots_active ON slots(active);  -- counting active slots reads no embeddings
CREATE TABLE IF NOT EXISTS score_cohort (id INTEGER PRIMARY KEY, embedding BLOB NOT NULL);  -- the model's
-- named speakers (weighter.index.speakers); a store made before them gains both tables on opening
CREATE TABLE IF NOT EXISTS speakers (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS speaker_refs (
    id INTEGER PRIMARY KEY, speaker_id INTEGER NOT NULL REFERENCES speakers(id) ON DELETE CASCADE,
    origin TEXT NOT NULL,  -- 'FILE', 'FILE@START-END' (an enrolment clip) or 'run R group G'
    slot_id INTEGER,  -- the stored slot it was taken from (a named group's member); NULL for a clip
    embedding BLOB NOT NULL, seconds REAL NOT NULL, added REAL NOT NULL);
CREATE INDEX IF NOT EXISTS speaker_refs_speaker ON speaker_refs(speaker_id);
"""


def content_hash(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as a store records it to skip unchanged files.

    Parameters
    ----------
    path : str or Path
        Any file.

    Returns
    -------
    str
        64 hexadecimal digits.

    Examples
    --------
    >>> content_hash("call.flac")  # doctest: +SKIP
    '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Store:
    """A store directory: files and their slots in SQLite, active slots in a FAISS index.

    Readers need no lock; one writer at a time holds ``writing()``. Fill a store with
    ``weighter.index.add_files``, search it with ``weighter.index.query_store``. A store is a
    context manager: ``with Store(...) as store:`` closes its database on exit.

    Parameters
    ----------
    directory : str or Path
        The store directory (``store.sqlite`` and the FAISS and scores files inside).
    create : bool, default False
        Create the directory and an empty store if there is none; otherwise a missing store
        raises ``StoreError``.
    read_only : bool, default False
        Open SQLite read-only, one connection per thread (a web server's request threads share
        the store and its loaded FAISS index); writing raises ``sqlite3.OperationalError``.

    Raises
    ------
    StoreError
        Not a store (and ``create`` is False), a corrupt database, or another store format.

    Examples
    --------
    >>> from weighter import Embedder, Store, add_files, query_store
    >>> with Store("calls.store", create=True) as store:  # doctest: +SKIP
    ...     add_files(store, Embedder.load(), ["calls/a.flac", "calls/b.flac"])
    ...     print(store.info().files, "files,", store.info().active_slots, "active slots")
    2 files, 5 active slots
    """

    delta_share = DELTA_SHARE  # per instance, for tests and benchmarks (0: every write makes a new base)
    delta_min_base = DELTA_MIN_BASE
    max_deltas = MAX_DELTAS
    map_from_bytes = MAP_FROM_BYTES
    index_memory = faiss_index.INDEX_MEMORY  # float16 vectors past this are stored in 8 bits (auto_factory)

    def __init__(self, directory: str | Path, create: bool = False, read_only: bool = False):
        self.directory = Path(directory)
        self.db_path = self.directory / "store.sqlite"
        self.read_only = read_only and not create
        self._connections: list[sqlite3.Connection] = []  # read-only: every thread's, closed together
        self._thread = threading.local()
        self._reading = threading.RLock()  # one thread loads a new generation's files; the others wait
        if not self.db_path.exists():
            if not create:
                raise StoreError(f"{self.directory}: not a weighter store (no store.sqlite; create one with "
                                 "create=True)", cli_hint="create one with `weighter index build`")
            self.directory.mkdir(parents=True, exist_ok=True)
        try:
            if self.read_only:
                self._db = None
                self.db.execute("SELECT 1 FROM meta LIMIT 1")
            else:
                self._db = sqlite3.connect(str(self.db_path), timeout=30, isolation_level=None)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA foreign_keys=ON")
                self.db.executescript(SCHEMA)
                if self._meta("format") is None:
                    self.db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (str(STORE_FORMAT),))
        except sqlite3.DatabaseError as error:
            raise StoreError(f"{self.db_path}: corrupt or not an SQLite store ({error})") from None
        if self._meta("format") != str(STORE_FORMAT):
            raise StoreError(f"{self.directory}: store format {self._meta('format')} is not {STORE_FORMAT}; "
                             "build it again in a new store", cli_hint="`weighter index build`")
        self._live = None  # faiss_index.LiveIndex of the generation in _live_state
        self._live_state = None  # (generation, base generation, delta generations applied)
        self._stats = None  # its score statistics, deltas included
        self._score_cohort = None
        self._lock_handle = None

    @property
    def db(self) -> sqlite3.Connection:
        """The SQLite connection (read-only stores: this thread's own, opened on first use)."""
        if not self.read_only:
            return self._db
        db = getattr(self._thread, "db", None)
        if db is None:
            from urllib.parse import quote

            db = sqlite3.connect(f"file:{quote(str(self.db_path.resolve()))}?mode=ro", uri=True, timeout=30,
                                 isolation_level=None, check_same_thread=False)  # closed by close() from any thread
            db.execute(f"PRAGMA mmap_size = {READ_MAP_BYTES}")  # a query's few rows without a read() each
            self._thread.db = db
            self._connections.append(db)
        return db

    # -- what this thread has read ------------------------------------------------------
    def _view(self) -> dict:
        """Values this thread read from SQLite (the meta table, the latest clustering run, ...),
        kept while the database is as it was then: another connection's commit changes PRAGMA
        data_version, this connection's writes change its total_changes, and a commit or a
        rollback its in_transaction. Inside ``snapshot()`` data_version is read once, at entry."""
        db = self.db
        pinned = getattr(self._thread, "pinned", None)
        version = pinned if pinned is not None else db.execute("PRAGMA data_version").fetchone()[0]
        state = (id(db), version, db.total_changes, db.in_transaction)
        view = getattr(self._thread, "view", None)
        if view is None or view[0] != state:
            view = self._thread.view = (state, {})
        return view[1]

    def _forget_view(self) -> None:
        """Read SQLite again at the next look (inside ``snapshot()`` too): a file it named went."""
        self._thread.view = None
        if getattr(self._thread, "pinned", None) is not None:
            self._thread.pinned = self.db.execute("PRAGMA data_version").fetchone()[0]

    @contextmanager
    def snapshot(self):
        """Ask SQLite once, at entry, whether another process changed the store, and trust what
        this thread read before for the rest of the block (a query: one statement instead of
        one per look at the meta table). This thread's own writes are still seen at once.

        Yields
        ------
        Store
            ``self``.

        Examples
        --------
        >>> with store.snapshot():  # doctest: +SKIP
        ...     store.generation, store.run_id()
        (12, 3)
        """
        if getattr(self._thread, "pinned", None) is not None:  # nested: the outer block's look holds
            yield self
            return
        self._thread.pinned = self.db.execute("PRAGMA data_version").fetchone()[0]
        try:
            yield self
        finally:
            self._thread.pinned = None

    def cached(self, key, compute):
        """``compute()``, kept for ``key`` while the database is unchanged (``_view``): for
        values read from SQLite that every query asks for again.

        Examples
        --------
        >>> store.cached(("slots",), lambda: store.info().slots)  # doctest: +SKIP
        12
        """
        view = self._view()
        if key not in view:
            view[key] = compute()
        return view[key]

    # -- metadata -------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        meta = self.cached("meta", lambda: dict(self.db.execute("SELECT key, value FROM meta").fetchall()))
        return meta.get(key)

    @property
    def _repair_hint(self) -> str:
        return f"`weighter index info --store {self.directory} --check --repair`"

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def model_id(self) -> str | None:
        """The id of the model whose embeddings the store holds; None while it is empty."""
        return self._meta("model_id")

    @property
    def speech_gate(self) -> float | None:
        """The speech gate its sets were embedded with (weighter.embedder.speech); None: none,
        also for stores from before the gate existed."""
        value = self._meta("speech_gate")
        return None if value in (None, "none") else float(value)

    def check_speech_gate(self, gate: float | None) -> None:
        """Refuse a speech gate other than the store's: a slot's active flag must mean the same
        for every file.

        Parameters
        ----------
        gate : float or None
            The embedder's ``speech_gate``.

        Raises
        ------
        StoreError
            The store holds files embedded with another gate.
        """
        if self.model_id is not None and gate != self.speech_gate:
            raise StoreError(f"{self.directory}: its files were embedded with speech gate {self.speech_gate}, "
                             f"not {gate}; use the same gate (index add and query take the store's own)")

    @property
    def generation(self) -> int:
        """The number of the FAISS and scores files in use; each write makes a new one (0: none yet)."""
        return int(self._meta("generation") or 0)

    def info(self) -> StoreInfo:
        """What the store holds.

        Returns
        -------
        StoreInfo
            Files, slots, audio seconds, the FAISS index and the scoring in use.

        Examples
        --------
        >>> Store("calls.store").info().active_slots  # doctest: +SKIP
        5
        """
        files, seconds = self.db.execute("SELECT COUNT(*), COALESCE(SUM(duration), 0) FROM files").fetchone()
        slots = self.db.execute("SELECT COUNT(*) FROM slots").fetchone()[0]  # SQLite counts a b-tree's entries fast
        active = self.active_slot_count()  # from meta: summing the active flags walks every slot (0.05 s at 1M)
        return StoreInfo(store=str(self.directory), model_id=self.model_id, files=files,
                         audio_seconds=round(seconds, 2), slots=slots, active_slots=active,
                         index_type=self._meta("index_type"), nprobe=int(self._meta("nprobe") or 0) or None,
                         speech_gate=self.speech_gate, generation=self.generation,
                         faiss_file=self._faiss_name(self._base_generation()) if self.generation else None,
                         deltas=len(json.loads(self._meta("deltas") or "[]")), lists_file=self._lists_file(),
                         scoring=self.scoring(), score_share=getattr(self.score_cohort(), "share", None),
                         **self._pair_prior())

    def _lists_file(self) -> str | None:
        """The base's on-disk inverted lists file's name, where it has one."""
        name = self._lists_name(self._base_generation())
        return name if self.generation and (self.directory / name).exists() else None

    def _pair_prior(self) -> dict:
        """``StoreInfo``'s pair_prior and pair_prior_fitted."""
        from weighter.index.pair_model import store_calibration

        model = store_calibration(self)
        if model is None or model.pairs < 0:
            return {"pair_prior": None, "pair_prior_fitted": False}
        return {"pair_prior": round(model.prior, 4), "pair_prior_fitted": model.pairs > 0}

    # -- writing ------------------------------------------------------------------------
    @contextmanager
    def writing(self):
        """Hold the store's write lock for a block: one writer at a time.

        A second writer, in this process or another, is refused at once.

        Yields
        ------
        Store
            ``self``.

        Raises
        ------
        StoreError
            Another writer holds the lock.

        Examples
        --------
        >>> with store.writing():  # doctest: +SKIP
        ...     store.repair()
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        handle = open(self.directory / "write.lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StoreError(f"{self.directory}: the store is being written by {holder}; try again when it finishes") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._lock_handle = handle
        try:
            self._remove_orphans()
            yield self
        finally:
            self._lock_handle = None
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def set_meta(self, key: str, value: str) -> None:
        """Record ``value`` under ``key`` in the store's meta table (replacing any)."""
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def meta(self, key: str) -> str | None:
        """The value recorded under ``key`` in the store's meta table, or None."""
        return self._meta(key)

    def check_model(self, model_id: str) -> None:
        """Refuse embeddings of another model than the store's (one embedding space per store).

        Parameters
        ----------
        model_id : str
            The embedder's ``model_id``.

        Raises
        ------
        StoreError
            The store holds embeddings of another model.
        """
        if self.model_id is not None and self.model_id != model_id:
            raise StoreError(f"{self.directory}: holds embeddings of model {self.model_id}, not {model_id}; "
                             "use a new store (or the same model)")

    def known_hash(self, path: str | Path) -> str | None:
        """The content hash stored for ``path`` (resolved), or None if it is not stored."""
        row = self.db.execute("SELECT content_hash FROM files WHERE path = ?", (str(Path(path).resolve()),)).fetchone()
        return row[0] if row else None

    def apply(self, add: list[tuple[EmbeddingSet, str]], remove: list[str | Path] = (), index_type: str | None = None,
              after_faiss_written=None, rebuild: bool = False, score_cohort: Cohort | None = None,
              compact: bool = False) -> ApplyResult:
        """Add (or replace) embedding sets and remove files, in one atomic step.

        Most programs call ``add_files`` and ``remove_files`` instead. Must run inside
        ``writing()``.

        Parameters
        ----------
        add : list of (EmbeddingSet, str)
            Embedding sets with their files' content hashes; a path already stored is replaced.
        remove : list of str or Path
            Paths to remove.
        index_type : str or None
            A FAISS factory string for the index; None keeps the store's, or picks one by size.
        after_faiss_written : callable or None
            A test hook, run between writing the new FAISS file and committing SQLite (where a
            crash must lose nothing).
        rebuild : bool, default False
            Build the FAISS index and scores file from SQLite even where an update would do.
        score_cohort : Cohort or None
            The model's score cohort (``weighter.scoring``), kept by a store that has none yet.
        compact : bool, default False
            Write a new base index holding every delta (``optimize``), even where a delta would do.

        Returns
        -------
        ApplyResult
            ``added``, ``removed``, ``active_vectors`` (in the new index) and ``index_type``.
        """
        if self._lock_handle is None:
            raise StoreError("Store.apply must run inside Store.writing()")
        for s, _ in add:
            self.check_model(s.model_id)
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            added_keys = [str(Path(s.path).resolve()) for s, _ in add]
            gone = [str(Path(path).resolve()) for path in remove] + added_keys
            removed_ids = [r[0] for r in self._rows_in(
                # files first (CROSS JOIN keeps the order): the planner otherwise walked every active slot
                # and +active: without it SQLite took slots(active) for s, every active slot per file (0.8 s at 1M)
                "SELECT s.id FROM files f CROSS JOIN slots s ON s.file_id = f.id WHERE f.path IN ({}) AND +s.active = 1",
                gone)]
            self._rows_in("DELETE FROM files WHERE path IN ({})", gone)  # slots go too (ON DELETE CASCADE)
            new_vectors, new_ids, slot_rows = [], [], []

            def insert_slots(rows: list[tuple]) -> None:
                db.executemany("INSERT INTO slots (id, file_id, slot, confidence, active, embedding, weightings, "
                               "timeline_rate) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
                rows.clear()

            for (s, digest), key in zip(add, added_keys):
                if len(s.confidence) > MAX_SLOTS:
                    raise StoreError(f"{s.path}: {len(s.confidence)} slots; a store holds at most {MAX_SLOTS} per file")
                cur = db.execute("INSERT INTO files (path, content_hash, duration, added) VALUES (?, ?, ?, ?)",
                                 (key, digest, float(s.duration), time.time()))
                file_id = cur.lastrowid
                for n in range(len(s.confidence)):
                    slot_id = self.slot_id(file_id, n)
                    slot_rows.append((slot_id, file_id, n, float(s.confidence[n]), int(bool(s.active[n])),
                                      s.embeddings[n].astype(np.float32).tobytes(),
                                      s.weightings[n].astype(np.float16).tobytes(), float(s.timeline_rate)))
                    if s.active[n]:
                        new_vectors.append(s.embeddings[n])
                        new_ids.append(slot_id)
                if len(slot_rows) >= 65_536:  # in batches: all of 1M slots' rows at once would hold ~1 GB
                    insert_slots(slot_rows)
            insert_slots(slot_rows)
            most, recorded = max([len(s.confidence) for s, _ in add], default=0), self._meta("max_slots")
            if recorded is None:  # a store from before it was kept: counted once
                self.set_meta("max_slots", str(max(most, self._count_max_slots())))
            elif most > int(recorded):
                self.set_meta("max_slots", str(most))
            new_cohort = score_cohort is not None and self.score_cohort() is None and len(score_cohort) >= MIN_COHORT
            if new_cohort:
                db.executemany("INSERT INTO score_cohort (id, embedding) VALUES (?, ?)",
                               [(i, np.asarray(v, np.float32).tobytes()) for i, v in enumerate(score_cohort.vectors)])
                self.set_meta("score_top_share", repr(float(score_cohort.share)))
            if add and self.model_id is None:
                gate = add[0][0].speech_gate
                self.set_meta("speech_gate", "none" if gate is None else repr(float(gate)))
                self.set_meta("model_id", add[0][0].model_id)
                self.set_meta("embed_dim", str(add[0][0].embeddings.shape[1]))

            active = functools.cache(self.slot_source)  # after this write; its ids read once if needed at all

            total = self._active_after(len(new_ids), len(removed_ids))
            wanted = (index_type or self._meta("index_type_override") or
                      auto_factory(total, int(self._meta("embed_dim") or 256), self.index_memory))
            if index_type:
                self.set_meta("index_type_override", index_type)
            if (not (rebuild or compact or index_type or new_cohort) and self._meta("index_type") == wanted
                    and self._delta_fits(len(new_ids) + len(removed_ids))):
                self._commit_delta(new_ids, new_vectors, removed_ids, after_faiss_written)
                return ApplyResult(added=len(add), removed=len(remove), active_vectors=int(total), index_type=wanted)
            live = index = None
            try:
                live = self._live_index() if self.generation else None
                index = live.materialised() if live is not None else None
            except StoreError:  # a corrupt or missing FAISS or delta file: rebuild it from SQLite
                live = None
            incremental = (not rebuild and index is not None and self._meta("index_type") == wanted and
                           (not removed_ids or faiss_index.removes_in_place(index)) and
                           not faiss_index.lists_wanted(index, total, self.map_from_bytes))
            if incremental:
                if removed_ids:
                    index.remove_ids(np.array(removed_ids, dtype=np.int64))
                if new_ids:
                    index.add_with_ids(np.stack(new_vectors).astype(np.float32), np.array(new_ids, dtype=np.int64))
            else:  # past map_from_bytes an IVF base keeps its lists in a file beside it
                index = faiss_index.build_index(wanted, int(self._meta("embed_dim") or 256), active(),
                                                self.directory / self._lists_name(self.generation + 1),
                                                self.map_from_bytes)
            self._tune_nprobe(index, retune=not incremental, active=active, factory=wanted)
            generation = self.generation + 1
            self._write_file(self._faiss_name(generation), functools.partial(faiss_index.write_index, index))
            template = faiss_index.empty_template(index)
            self._write_file(self._template_name(generation), functools.partial(faiss_index.write_index, template))
            cohort = score_cohort if new_cohort else self.score_cohort()
            gone = removed_ids + (live.dead.tolist() if live is not None else [])  # the deltas' tombstones too
            stats = self._next_stats(cohort, new_ids, new_vectors, gone, rebuild or new_cohort, active)
            if stats is not None:
                self._write_file(self._stats_name(generation), functools.partial(score_stats.write_stats, stats))
            if after_faiss_written:
                after_faiss_written()
            self.set_meta("generation", str(generation))
            self.set_meta("base_generation", str(generation))
            self.set_meta("base_vectors", str(index.ntotal))
            self.set_meta("deltas", "[]")
            self.set_meta("index_type", wanted)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self._live = self._live_state = None  # materialising changed the cached base in place
            self._score_cohort = None
            raise
        self._live = faiss_index.LiveIndex(index, template)
        self._live_state = (generation, generation, ())
        self._stats = stats
        self._remove_orphans()  # the old base, its template and scores, and every delta
        return ApplyResult(added=len(add), removed=len(remove), active_vectors=int(index.ntotal), index_type=wanted)

    def _active_after(self, added: int, removed: int) -> int:
        """Active slots once this write's rows are in: the base's count and each delta's adds and
        removals, from meta, moved by this write's (counting SQLite's active slots walks every
        one: 0.1 s and more at 1M; asking the live index would copy its delta), or that count
        for a store whose meta does not hold them (none yet, or from before deltas)."""
        base = self._meta("base_vectors")
        if self.generation and base is not None:
            deltas = json.loads(self._meta("deltas") or "[]")
            return int(base) + sum(a - r for _, a, r in deltas) + added - removed
        return self.db.execute("SELECT COUNT(*) FROM slots WHERE active = 1").fetchone()[0]

    def _delta_fits(self, changes: int) -> bool:
        """Whether this write may go as a delta: the store has a base of at least DELTA_MIN_BASE
        vectors with a template, fewer than MAX_DELTAS deltas, and the deltas' adds and removals,
        this write's included, at most DELTA_SHARE of the base. Past that the write makes a new
        base (a compaction): the base is rewritten once per DELTA_SHARE of growth, so a vector
        is written a bounded number of times and a commit costs what it adds, not the store."""
        if not self.generation or self._meta("base_vectors") is None:
            return False  # a store from before deltas: its next write makes a base with a template
        base = int(self._meta("base_vectors"))
        deltas = json.loads(self._meta("deltas") or "[]")
        pending = sum(added + removed for _, added, removed in deltas) + changes
        return (base >= self.delta_min_base and len(deltas) < self.max_deltas and pending <= self.delta_share * base
                and (self.directory / self._template_name(self._base_generation())).exists())

    def _commit_delta(self, new_ids: list[int], new_vectors: list[np.ndarray], removed_ids: list[int],
                      after_faiss_written) -> None:
        """The rest of ``apply`` for a delta: write ``delta-<G>.npz`` (the new active slots'
        ids, vectors and score statistics, the removed ids), then commit SQLite with meta's
        generation and delta list; the base files stay as they are."""
        generation = self.generation + 1
        dim = int(self._meta("embed_dim") or 256)
        delta = {"ids": np.array(new_ids, np.int64), "removed": np.array(removed_ids, np.int64),
                 "vectors": np.stack(new_vectors).astype(np.float32) if new_ids else np.zeros((0, dim), np.float32)}
        cohort = self.score_cohort()
        if cohort is not None:
            delta["mean"], delta["spread"] = cohort_stats(delta["vectors"], cohort)
        self._write_file(self._delta_name(generation), functools.partial(score_stats.write_arrays, delta))
        if after_faiss_written:
            after_faiss_written()
        deltas = json.loads(self._meta("deltas") or "[]") + [[generation, len(new_ids), len(removed_ids)]]
        self.set_meta("generation", str(generation))
        self.set_meta("deltas", json.dumps(deltas))
        self.db.execute("COMMIT")

    def _write_file(self, name: str, write) -> None:
        """Make the file ``name`` in the store directory whole or not at all: ``write(path)``
        writes a temporary file, which then replaces it."""
        tmp = self.directory / (name + ".tmp")
        write(tmp)
        os.replace(tmp, self.directory / name)

    def _tune_nprobe(self, index, retune: bool, active, factory: str) -> None:
        """An IVF index's nprobe (``faiss_index.tune_nprobe``) for an index of kind ``factory``,
        recorded in meta with the index size it was tuned at."""
        tuned = faiss_index.tune_nprobe(index, retune, bool(self._meta("nprobe")),
                                        int(self._meta("nprobe_tuned_at") or 0), active,
                                        exact=faiss_index.exact_scores(factory))
        if tuned is None:
            self.db.execute("DELETE FROM meta WHERE key IN ('nprobe', 'nprobe_tuned_at')")
        elif tuned:
            self.set_meta("nprobe", str(tuned))
            self.set_meta("nprobe_tuned_at", str(index.ntotal))

    def _next_stats(self, cohort: Cohort | None, new_ids: list[int], new_vectors: list[np.ndarray],
                    removed_ids: list[int], recompute: bool, active) -> dict | None:
        """Every active slot's normalisation statistics after this write (None without a score
        cohort): updated from the current scores file, or, with ``recompute`` or no readable
        current file, all of them again from ``active()`` (``score_stats.next_stats``)."""
        if cohort is None:
            return None
        try:
            old = None if recompute else self._load_stats()
        except StoreError:  # a corrupt scores file: recompute it
            old = None
        return score_stats.next_stats(old, cohort, new_ids, new_vectors, removed_ids, active)

    def _remove_orphans(self) -> None:
        """Delete the index files the current generation does not use: those of a write that
        was killed before its commit, and, after a new base, the old base and its deltas."""
        base = self._base_generation()
        keep = {self._faiss_name(base), self._lists_name(base), self._stats_name(base),
                self._template_name(base), *(self._delta_name(g) for g, _, _ in json.loads(self._meta("deltas") or "[]"))}
        for pattern in ("vectors-*.faiss*", "scores-*.npz*", "template-*.faiss*", "delta-*.npz*"):
            for path in self.directory.glob(pattern):
                if path.name not in keep:
                    path.unlink(missing_ok=True)
        for path in self.directory.glob(faiss_index.SHARDS_PREFIX + "*"):  # a build killed while merging
            shutil.rmtree(path, ignore_errors=True)

    def _base_generation(self) -> int:
        """The generation of the base index files (a store from before deltas: the current one)."""
        return int(self._meta("base_generation") or self.generation)

    @staticmethod
    def _faiss_name(generation: int) -> str:
        return f"vectors-{generation:06d}.faiss"

    @classmethod
    def _lists_name(cls, generation: int) -> str:  # a base's inverted lists where they are on disk
        return faiss_index.lists_path(Path(cls._faiss_name(generation))).name

    @staticmethod
    def _stats_name(generation: int) -> str:
        return f"scores-{generation:06d}.npz"

    @staticmethod
    def _template_name(generation: int) -> str:
        return f"template-{generation:06d}.faiss"

    @staticmethod
    def _delta_name(generation: int) -> str:
        return f"delta-{generation:06d}.npz"

    # -- reading ------------------------------------------------------------------------
    def _load_index(self):
        """The base FAISS index of the current generation (its deltas: ``_live_index``)."""
        return self._live_index().index

    def _live_index(self) -> faiss_index.LiveIndex:
        """The current generation's index: base, deltas, tombstones (``faiss_index.LiveIndex``).
        A reader that holds an earlier generation of the same base reads only the deltas since."""
        return self._live_pair()[0]

    def _live_pair(self) -> tuple[faiss_index.LiveIndex, dict | None]:
        """The current generation's index and its score statistics, as this thread last found
        them while the database is unchanged (``_view``), else loaded."""
        view = self._view()
        if "live" not in view:
            pair = self._load_live()
            view = self._view()  # a retry inside may have read SQLite again
            view["live"] = pair
        return view["live"]

    def _load_live(self) -> tuple[faiss_index.LiveIndex, dict | None]:
        with self._reading:
            for _ in range(3):  # a writer may replace the files between reading meta and opening them
                generation = int(self._meta("generation") or 0)  # the meta table is read in one statement
                base = int(self._meta("base_generation") or generation)
                deltas = [g for g, _, _ in json.loads(self._meta("deltas") or "[]")]
                if self._live is not None and self._live_state[0] == generation:
                    return self._live, self._stats
                try:
                    self._catch_up(generation, base, deltas)
                    return self._live, self._stats
                except FileNotFoundError:
                    time.sleep(0.05)
                    self._forget_view()
            raise StoreError(f"{self.directory}: FAISS file {self._faiss_name(self._base_generation())} (or one of "
                             "its deltas) is missing; rebuild it from SQLite with Store.repair()",
                             cli_hint=self._repair_hint)

    def _catch_up(self, generation: int, base: int, deltas: list[int]) -> None:
        """Load generation ``generation``: from the cached one where it has the same base and a
        prefix of these deltas, else from the base files. FileNotFoundError where a file went."""
        cached = self._live_state
        if cached is not None and cached[1] == base and tuple(deltas[:len(cached[2])]) == cached[2]:
            live, stats, done = self._live, self._stats, len(cached[2])
        else:
            path = self.directory / self._faiss_name(base)
            # a reader never changes its base: past a quarter of RAM it is mapped rather than read
            mapped = self.read_only and path.exists() and path.stat().st_size > self.map_from_bytes
            index = faiss_index.read_index(path, self._repair_hint, mapped=mapped)
            if index is None:
                raise FileNotFoundError(self._faiss_name(base))
            template_path = self.directory / self._template_name(base)
            template = faiss_index.read_index(template_path, self._repair_hint) if template_path.exists() else None
            live, done = faiss_index.LiveIndex(index, template), 0
            stats = self._read_base_stats(base)
        for g in deltas[done:]:
            delta = score_stats.read_arrays(self.directory / self._delta_name(g), "delta file", self._repair_hint)
            live = live.extended(delta["ids"], delta["vectors"], delta["removed"], g)
            if stats is not None and "mean" in delta:
                stats = score_stats.extended(stats, delta["ids"], delta["mean"], delta["spread"], self.owners)
        self._live, self._stats, self._live_state = live, stats, (generation, base, tuple(deltas))

    def score_cohort(self) -> Cohort | None:
        """The model's score cohort that this store normalises against, with its share (a store
        from before stores recorded one: LEGACY_TOP_SHARE), or None (a model without one, or a
        store from before stores kept one: raw cosines)."""
        if self._score_cohort is None:
            rows = self.db.execute("SELECT embedding FROM score_cohort ORDER BY id").fetchall()
            if rows:
                self._score_cohort = Cohort(np.stack([np.frombuffer(r[0], np.float32) for r in rows]),
                                            float(self._meta("score_top_share") or LEGACY_TOP_SHARE))
        return self._score_cohort

    def _load_stats(self) -> dict | None:
        """The current generation's score statistics as arrays (ids, mean, spread), its deltas'
        included (tombstoned slots too: they are never looked up); None where there is none."""
        if not self.generation:
            return None
        return self._live_pair()[1]

    def scoring(self) -> str:
        """How queries score slot pairs: "s-norm" (against the model's score cohort) or "cosine".
        Asks the statistics this thread holds, else reads the base's scores file alone (not the
        FAISS index: 0.39 of `weighter index info`'s 0.8 s at 1M slots)."""
        if self.score_cohort() is None:
            return "cosine"
        live = self._view().get("live") if self.generation else None
        try:
            if live is not None:
                stats = live[1]
            else:
                stats = self._read_base_stats(self._base_generation()) if self.generation else None
        except StoreError:
            return "cosine (corrupt scores file: repair)"
        return "s-norm" if stats is not None else "cosine (scores file missing: repair)"

    def _read_base_stats(self, base: int) -> dict | None:
        """The score statistics of base generation ``base`` from its scores file (its deltas'
        not included); None without a cohort or a file. StoreError for a corrupt file."""
        path = self.directory / self._stats_name(base)
        if self.score_cohort() is None or not path.exists():
            return None
        return score_stats.read_stats(path, self._repair_hint)

    def slot_stats(self, vector_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Stored slots' normalisation statistics (mean, spread), or None where queries score
        raw cosines (no score cohort). Raises StoreError for a corrupt or missing scores file."""
        stats = self._scoring_stats()
        return None if stats is None else score_stats.slot_stats(stats, vector_ids, self.owners)

    def stats_table(self) -> np.ndarray | None:
        """Stored slots' normalisation statistics by (file id, slot number): (F, S, 2) float32,
        mean and spread (0 and 1 where a slot has none); None where queries score raw cosines or
        the ids are too sparse for a table (``slot_stats`` then searches them). Raises
        StoreError for a corrupt or missing scores file.

        Examples
        --------
        >>> mean, spread = store.stats_table()[file_id, 0]  # doctest: +SKIP
        >>> round(float(mean), 2), round(float(spread), 2)  # doctest: +SKIP
        (0.31, 0.05)
        """
        stats = self._scoring_stats()
        return None if stats is None else self._stats_table(stats)

    def _scoring_stats(self) -> dict | None:
        """The score statistics queries need, or None where they score raw cosines (no cohort)."""
        if self.score_cohort() is None:
            return None
        stats = self._load_stats()
        if stats is None:
            raise StoreError(f"{self.directory}: scores file {self._stats_name(self._base_generation())} is missing; "
                             "rebuild it from SQLite with Store.repair()", cli_hint=self._repair_hint)
        return stats

    def _stats_table(self, stats: dict) -> np.ndarray | None:
        """The scores' (file id, slot number) table, or None (``score_stats.stats_table``)."""
        return score_stats.stats_table(stats, self.owners)

    def query_stats(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Normalisation statistics of query slots against the score cohort; None where queries
        score raw cosines."""
        cohort = self.score_cohort()
        return None if cohort is None else cohort_stats(vectors, cohort)

    def active_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Every active slot, from SQLite.

        Returns
        -------
        ids : ndarray of shape (n,), int64
            Slot (vector) ids, ascending.
        vectors : ndarray of shape (n, E), float32
            Their embeddings.
        """
        rows = self.db.execute("SELECT id, embedding FROM slots WHERE active = 1 ORDER BY id").fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64), self._embeddings(r[1] for r in rows)

    def _embeddings(self, blobs) -> np.ndarray:
        """Stored embedding BLOBs, in order -> (n, E) float32."""
        return np.frombuffer(b"".join(blobs), np.float32).reshape(-1, int(self._meta("embed_dim") or 256))

    def slot_embeddings(self, slot_ids: np.ndarray) -> np.ndarray:
        """The stored embeddings (n, E) float32 of these slots (vector ids), in their order.

        Examples
        --------
        >>> store.slot_embeddings(np.array([4096, 4097])).shape  # doctest: +SKIP
        (2, 256)
        """
        slot_ids = [int(i) for i in slot_ids]
        rows = dict(self._rows_in("SELECT id, embedding FROM slots WHERE id IN ({})", slot_ids))
        return self._embeddings(rows[i] for i in slot_ids)

    def _active_ids(self) -> np.ndarray:
        """Every active slot's id, ascending."""
        return np.fromiter((r[0] for r in self.db.execute("SELECT id FROM slots WHERE active = 1 ORDER BY id")), np.int64)

    def slot_source(self, chunk: int | None = None) -> faiss_index.SlotSource:
        """Every active slot as a build reads them: the ids now, the embeddings a chunk of
        consecutive ids at a time (``faiss_index.SlotSource``), so that building an index over
        more vectors than RAM holds keeps one chunk in memory. Read inside a write's
        transaction, the rows cannot change between chunks.

        Examples
        --------
        >>> source = store.slot_source()  # doctest: +SKIP
        >>> sum(len(v) for _, v in source.chunks()) == len(source.ids)  # doctest: +SKIP
        True
        """
        ids, dim = self._active_ids(), int(self._meta("embed_dim") or 256)

        def read(lo: int, hi: int) -> np.ndarray:
            rows = self.db.execute("SELECT embedding FROM slots WHERE id BETWEEN ? AND ? AND +active = 1 ORDER BY id",
                                   (int(ids[lo]), int(ids[hi - 1]))).fetchall()
            if len(rows) != hi - lo:
                raise StoreError(f"{self.directory}: the active slots changed while they were read a chunk at a time "
                                 "(read them inside one transaction)")
            return self._embeddings(r[0] for r in rows)

        return faiss_index.SlotSource(ids, read, dim, chunk or faiss_index.SOURCE_CHUNK)

    def active_slot_count(self) -> int:
        """Active slots, from meta where it holds the base's count and the deltas' (no table scan,
        no index loaded); counted in SQLite otherwise.

        Examples
        --------
        >>> Store("calls.store").active_slot_count()  # doctest: +SKIP
        250000
        """
        return self._active_after(0, 0)

    def vector_count(self) -> int:
        """Active vectors in the FAISS index (cheap: no table scan)."""
        return int(self._live_index().ntotal) if self.generation else 0

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, E) -> scores (Q, k), vector ids (Q, k); -1 where fewer than k exist."""
        if not self.generation:
            return np.zeros((len(vectors), 0)), np.zeros((len(vectors), 0), np.int64)
        return self._live_index().search(np.ascontiguousarray(vectors, dtype=np.float32), k)

    @staticmethod
    def owners(vector_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vector (slot) ids -> file ids, slot numbers: arithmetic, no lookup (ids encode both)."""
        vector_ids = np.asarray(vector_ids, dtype=np.int64)
        return vector_ids >> SLOT_BITS, vector_ids & (MAX_SLOTS - 1)

    @staticmethod
    def slot_id(file_id: int, slot: int) -> int:
        """The vector id of slot ``slot`` of file ``file_id`` (``owners`` inverts it)."""
        return (int(file_id) << SLOT_BITS) + int(slot)

    @staticmethod
    def slot_ids(file_ids: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Vector ids of (file, slot) pairs: the inverse of ``owners``."""
        return (np.asarray(file_ids, np.int64) << SLOT_BITS) + np.asarray(slots, np.int64)

    def _rows_in(self, query: str, ids) -> list[tuple]:
        """Rows of ``query`` (with one ``{}`` for the placeholders of an ``IN (...)``; a DELETE
        returns none) for all ``ids`` (integers or paths), bound _CHUNK at a time."""
        ids, rows = [i if isinstance(i, str) else int(i) for i in ids], []
        for start in range(0, len(ids), _CHUNK):
            part = ids[start:start + _CHUNK]
            rows += self.db.execute(query.format(",".join("?" * len(part))), part).fetchall()
        return rows

    def slot_timelines(self, slot_ids: list[int], run: int | None = None) -> dict[int, tuple]:
        """Slot id -> (file path, duration, weightings (T,), timeline rate); given a clustering
        ``run``, a fifth value from the same statement: the slot's group in it (-1: an outlier;
        None: the run does not hold the slot). The weightings are float16 as stored (read-only
        views: an hour's 36,000 values are not copied; ``spans`` reads them as they are).

        Examples
        --------
        >>> path, duration, weighting, rate, group = store.slot_timelines([4096], run=3)[4096]  # doctest: +SKIP
        """
        if run is None:
            rows = self._rows_in("SELECT s.id, f.path, f.duration, s.weightings, s.timeline_rate FROM slots s "
                                 "JOIN files f ON f.id = s.file_id WHERE s.id IN ({})", slot_ids)
        else:
            rows = self._rows_in("SELECT s.id, f.path, f.duration, s.weightings, s.timeline_rate, m.group_id "
                                 "FROM slots s JOIN files f ON f.id = s.file_id LEFT JOIN cluster_members m "
                                 f"ON m.run_id = {int(run)} AND m.slot_id = s.id WHERE s.id IN ({{}})", slot_ids)
        return {r[0]: (r[1], float(r[2]), np.frombuffer(r[3], np.float16), float(r[4]), *r[5:]) for r in rows}

    def run_id(self, run: int | None = None) -> int | None:
        """The id of the store's latest clustering run (``weighter cluster``), or ``run`` where
        the store holds it; None where it holds no such run (or was never clustered).

        Examples
        --------
        >>> store.run_id(), store.run_id(99)  # doctest: +SKIP
        (3, None)
        """
        return self.cached(("run_id", run), lambda: self._read_run_id(run))

    def _read_run_id(self, run: int | None) -> int | None:
        if not self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'cluster_runs'").fetchone():
            return None
        row = self.db.execute("SELECT MAX(id) FROM cluster_runs" if run is None else
                              "SELECT id FROM cluster_runs WHERE id = ?", () if run is None else (run,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def slot_groups(self, slot_ids: list[int], run: int | None = None) -> tuple[int | None, dict[int, int]]:
        """A clustering run (default the store's latest) and the group of each of these slots in it.

        Returns
        -------
        run : int or None
            The run's id; None when the store was never clustered.
        groups : dict
            Slot id -> group (-1: an outlier), for the slots the run holds.

        Examples
        --------
        >>> run, groups = store.slot_groups([12, 40])  # doctest: +SKIP
        >>> run, groups
        (3, {12: 0, 40: -1})
        """
        if run is None:
            run = self.run_id()
            if run is None:
                return None, {}
        rows = self._rows_in(f"SELECT slot_id, group_id FROM cluster_members WHERE run_id = {int(run)} "
                             "AND slot_id IN ({})", [int(i) for i in slot_ids])
        return int(run), {int(a): int(b) for a, b in rows}

    def pair_probability(self, scores) -> np.ndarray | None:
        """P(two files share a like) for their best slot-pair ``scores`` (normalised against the
        cohort where the store keeps one, else raw cosines, as its queries score them): the model's
        calibration at the base rate the store fitted to its own file pairs
        (``pair_model.fit_store``), else at the one the calibration states; None for a model
        without calibration.

        Examples
        --------
        >>> store.pair_probability([3.2, -1.0])  # doctest: +SKIP
        array([0.82, 0.01])
        """
        from weighter.index.pair_model import store_calibration

        calibration = store_calibration(self)
        return None if calibration is None else calibration.probability(scores)

    def max_slots(self) -> int:
        """Most slots any stored file has had (the embedder's N for one-window files): kept in
        meta by every write, so it may stay above the most a file has now after removals (a
        search a little deeper, never too shallow); counted in SQLite for a store whose meta
        does not hold it yet (the (file, slot) index walked: 0.05-0.07 s at 1M slots)."""
        return self.cached("max_slots", lambda: int(self._meta("max_slots") or self._count_max_slots()))

    def _count_max_slots(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MAX(slot), 0) + 1 FROM slots").fetchone()[0])

    def exact_scores(self) -> bool:
        """Does the FAISS index return exact inner products? Uncompressed vectors do, and so, to
        within 1e-4 of a cosine, do float16 ones (SQfp16, SQbf16); PQ, 8-bit and smaller codes do not."""
        return self.cached("exact_scores", lambda: faiss_index.exact_scores(self._meta("index_type") or "Flat"))

    def active_slots_of(self, file_ids: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Active slots of these files, by file id then slot: file ids (S,), slot numbers (S,),
        embeddings (S, E).

        A file's slots are one range of row ids (``slot_id``), read straight from the table:
        through the slots' (file, slot) index first, 40 files' 320 slots took 0.45-0.48 ms
        warm against 0.37-0.41 (a 1M-slot store)."""
        ids, rows = sorted({int(f) for f in file_ids}), []
        for start in range(0, len(ids), _CHUNK):
            part = ids[start:start + _CHUNK]
            rows += self.db.execute(
                f"WITH f(id) AS (VALUES {','.join(['(?)'] * len(part))}) SELECT s.file_id, s.slot, s.embedding "
                f"FROM f CROSS JOIN slots s ON s.id BETWEEN f.id << {SLOT_BITS} AND (f.id << {SLOT_BITS}) + "
                f"{MAX_SLOTS - 1} WHERE +s.active = 1", part).fetchall()
        emb = self._embeddings(r[2] for r in rows)
        file_of, slot_of = np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.int64)
        vector_ids = self.slot_ids(file_of, slot_of)
        if np.all(vector_ids[1:] > vector_ids[:-1]):  # SQLite's order, as it reads them
            return file_of, slot_of, emb
        order = np.argsort(vector_ids, kind="stable")
        return file_of[order], slot_of[order], emb[order]

    def embedding_set(self, file_id: int) -> EmbeddingSet:
        """A stored file's embedding set, as the embedder made it.

        Parameters
        ----------
        file_id : int
            As ``file_id(path)`` returns it.

        Returns
        -------
        EmbeddingSet

        Raises
        ------
        StoreError
            No such file.

        Examples
        --------
        >>> query = store.embedding_set(store.file_id("calls/a.flac"))  # doctest: +SKIP
        """
        file = self.db.execute("SELECT path, duration FROM files WHERE id = ?", (file_id,)).fetchone()
        if file is None:
            raise StoreError(f"{self.directory}: no file with id {file_id}")
        rows = self.db.execute("SELECT confidence, active, embedding, weightings, timeline_rate FROM slots "
                               "WHERE file_id = ? ORDER BY slot", (file_id,)).fetchall()
        emb = np.stack([np.frombuffer(r[2], np.float32) for r in rows])
        weights = np.stack([np.frombuffer(r[3], np.float16).astype(np.float32) for r in rows])
        return EmbeddingSet(file[0], emb, np.array([r[0] for r in rows], np.float32), np.array([bool(r[1]) for r in rows]),
                            weights, float(rows[0][4]), float(file[1]), self.model_id or "")

    def file_id(self, path: str | Path) -> int | None:
        """The id of a stored file by its path (resolved), or None if it is not stored."""
        row = self.db.execute("SELECT id FROM files WHERE path = ?", (os.path.realpath(path),)).fetchone()
        return row[0] if row else None

    def check(self) -> list[str]:
        """Verify the store: SQLite's integrity, and the FAISS and scores files holding exactly
        the active slots.

        Returns
        -------
        list of str
            One line per problem; empty when the store is sound.
        """
        problems = []
        result = self.db.execute("PRAGMA integrity_check").fetchone()[0]
        if result != "ok":
            problems.append(f"sqlite integrity: {result}")
        ids = self._active_ids()  # and only the probes' embeddings below: all of them are 10 GB at 10M slots
        if not self.generation:
            if len(ids):
                problems.append("active slots exist but no FAISS index")
            return problems
        try:
            live = self._live_index()
        except StoreError as error:
            return problems + [str(error)]
        if self.score_cohort() is not None:
            try:
                stats = self._load_stats()
            except StoreError as error:
                problems.append(str(error))
            else:
                if stats is None:
                    problems.append(f"scores file {self._stats_name(self._base_generation())} is missing")
                elif not np.array_equal(np.sort(stats["ids"][~np.isin(stats["ids"], live.dead)]), ids):
                    problems.append("the scores file's slots differ from SQLite's active slots")
        probe_ids = ids[:: max(1, len(ids) // 50)]
        return problems + faiss_index.check_index(live, ids, probe_ids, self.slot_embeddings(probe_ids),
                                                  int(self._meta("nprobe") or 0),
                                                  self._meta("index_type") or "Flat")

    def optimize(self) -> ApplyResult:
        """Write a new base index holding every delta, tombstones dropped (and retrained where
        the store has outgrown its index type). Must run inside ``writing()``; readers go on
        reading the old generation until it commits.

        Returns
        -------
        ApplyResult

        Examples
        --------
        >>> with Store("calls.store") as store, store.writing():  # doctest: +SKIP
        ...     store.optimize().active_vectors
        1000000
        """
        return self.apply([], [], compact=True)

    def repair(self) -> dict:
        """Rebuild the FAISS index and scores file from SQLite (the source of truth).

        Must run inside ``writing()``.

        Returns
        -------
        dict
            As ``apply`` returns it.

        Examples
        --------
        >>> with Store("calls.store") as store, store.writing():  # doctest: +SKIP
        ...     store.repair()
        """
        return self.apply([], [], rebuild=True)

    def close(self) -> None:
        """Close the store's database; ``with Store(...) as store:`` does it on exit."""
        if not self.read_only:
            self._db.close()
        for db in self._connections:
            db.close()

