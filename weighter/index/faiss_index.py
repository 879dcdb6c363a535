"""The store's FAISS index of active slot embeddings: choosing its type, building, tuning,
reading and checking it.

Module-level functions over a FAISS index and arrays, with no SQLite: ``weighter.index.store``
keeps the generations and metadata and calls these to make and use the index file.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from weighter.errors import StoreError

EXACT_LIMIT = 100_000  # active vectors up to which search is exact (Flat); beyond, IVF
TWO_LEVEL_FROM = 1024  # IVF lists from which the coarse k-means runs in two levels (see build_index)
HNSW_EF_SEARCH = 128  # for a user's 'HNSW..' factory string
IVF_RECALL = 0.95  # recall@10 of exact search that the tuned nprobe reaches on the store's own slots
TUNE_QUERIES = 128  # own slots searched to tune nprobe (their exact search at 1M: 3.0 s here)
NPROBE_MARGIN = 2  # the tuned nprobe is doubled: for a sample's error and queries recorded elsewhere
RERANK_DEPTH = 8  # compressed codes: a query re-scores its (k + 1) x max slots hits exactly; 8 slots a file
MIN_NPROBE = 8
RETUNE_DRIFT = 1.25  # an index updated in place is tuned again once its size moved by this factor
# Float16 vectors past this many bytes are stored in 8 bits instead (``auto_factory``): the
# index a writer builds must fit beside everything else, and a reader maps larger ones.
INDEX_MEMORY = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
SOURCE_CHUNK = 131_072  # active slots read at a time while a build streams them (128 MiB of float32 at E=256)
# An IVF base whose codes and ids pass a given size keeps its inverted lists in a file beside
# it (FAISS's OnDiskInvertedLists, ``<index file>.lists``), memory-mapped: built as shards of
# this many vectors merged on disk (``merge_ondisk``), so neither writer nor reader holds them.
LISTS_SUFFIX = ".lists"
SHARD_VECTORS = 1 << 20
SHARDS_PREFIX = ".shards-"  # the temporary folder of a build's shards, in the store directory


class SlotSource:
    """The active slots a build reads: their ids (ascending) at once, their vectors in
    chunks of consecutive rows, so that a build holds its index and one chunk rather than every
    vector (10M slots of 256 floats: 10 GB).

    Parameters
    ----------
    ids : ndarray of shape (n,), int64
        Ascending.
    read : callable
        ``read(lo, hi)`` -> the vectors (hi - lo, E) float32 of rows ``lo`` to ``hi`` (ids[lo:hi]).
    dim : int
    chunk : int, default SOURCE_CHUNK

    Examples
    --------
    >>> import numpy as np
    >>> source = SlotSource.of(np.arange(5), np.eye(5, dtype=np.float32), chunk=2)
    >>> [(start, len(v)) for start, v in source.chunks()]
    [(0, 2), (2, 2), (4, 1)]
    >>> source.take(np.array([4, 0]))[:, 4].tolist()
    [1.0, 0.0]
    """

    def __init__(self, ids: np.ndarray, read, dim: int, chunk: int = SOURCE_CHUNK):
        self.ids, self._read, self.dim, self.chunk = np.asarray(ids, np.int64), read, dim, chunk

    @classmethod
    def of(cls, ids: np.ndarray, vectors: np.ndarray, chunk: int = SOURCE_CHUNK) -> "SlotSource":
        """A source over vectors already in memory."""
        vectors = np.ascontiguousarray(vectors, np.float32)
        return cls(ids, lambda lo, hi: vectors[lo:hi], vectors.shape[1], chunk)

    def __len__(self) -> int:
        return len(self.ids)

    def chunks(self):
        """(first row, vectors (c, E)) of consecutive rows, in id order."""
        for start in range(0, len(self.ids), self.chunk):
            yield start, np.ascontiguousarray(self._read(start, min(start + self.chunk, len(self.ids))), np.float32)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Vectors (len(rows), E) of these rows, in their order: one pass over the chunks."""
        rows = np.asarray(rows, np.int64)
        out = np.zeros((len(rows), self.dim), np.float32)
        order = np.argsort(rows)
        bounds = np.searchsorted(rows[order], np.arange(0, len(self.ids) + self.chunk, self.chunk))
        for n, (start, vectors) in enumerate(self.chunks()):
            picked = order[bounds[n]:bounds[n + 1]]
            if len(picked):
                out[picked] = vectors[rows[picked] - start]
        return out


def auto_factory(active: int, dim: int = 256, memory: int | None = None) -> str:
    """Flat (exact) up to EXACT_LIMIT; beyond, IVF with nlist = 4 sqrt(n) rounded to a power of
    two (the FAISS guideline for up to ~1M vectors), its vectors stored as float16 (half the
    memory read per probe: p50 at 1M 17 -> 14 ms, recall@10 unchanged at 0.9525; scores within
    1e-4 of float32, so they count as exact). It changes only when n grows 4x, so the index is
    retrained (rebuilt) rarely. How many lists a search probes is tuned per store
    (``tuned_nprobe``).

    Past ``memory`` bytes of float16 vectors (default INDEX_MEMORY, a quarter of this machine's
    RAM) they are stored in 8 bits instead (half the size); a query then re-scores its best
    candidate files exactly from SQLite. 1M synthetic slots (``benchmarks/index_speed.py
    --index-type``): 8-bit recall@10 0.985, query p50 5.4 ms; product quantisation to 32
    bytes (PQ32) reached recall@10 0.36 and never 0.95 however many lists it probed.

    Examples
    --------
    >>> auto_factory(1_000_000), auto_factory(50_000_000, memory=8 * 2**30)
    ('IVF4096,SQfp16', 'IVF32768,SQ8')
    """
    if active <= EXACT_LIMIT:
        return "Flat"
    nlist = 2 ** int(round(np.log2(4 * np.sqrt(active))))
    if active * (2 * dim + 8) > (INDEX_MEMORY if memory is None else memory):  # float16 codes and an id each
        return f"IVF{nlist},SQ8"
    return f"IVF{nlist},SQfp16"


def build_index(factory: str, dim: int, source: SlotSource, lists: Path | None = None,
                lists_from_bytes: int | None = None):
    """A new FAISS index of ``dim``-dimensional inner products over the active slots of
    ``source``, made by the factory string ``factory``: trained on a sample, then filled a
    chunk at a time.

    Parameters
    ----------
    factory : str
    dim : int
    source : SlotSource
    lists : Path, optional
        Where an IVF index keeps its inverted lists on disk when its codes and ids pass
        ``lists_from_bytes`` (``lists_path`` of the index file: a reader finds them beside
        it); None: in memory.
    lists_from_bytes : int, optional
        Size from which ``lists`` is used (default: always, when given).

    Returns
    -------
    faiss.Index
        With its lists on disk it keeps the trained empty index for ``empty_template``.

    Examples
    --------
    >>> import numpy as np
    >>> source = SlotSource.of(np.arange(3), np.eye(3, 8, dtype=np.float32))
    >>> build_index("Flat", 8, source).ntotal
    3
    """
    import faiss

    ids = source.ids
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)  # already its concrete class
    if not isinstance(index, faiss.IndexIVF):  # IVF keeps ids itself (removal in place); others need a map
        index = faiss.index_factory(dim, f"IDMap2,{factory}", faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:  # IVF and PQ: train on a sample, 30-256 points per list (FAISS guidelines)
        if len(ids) == 0:
            raise StoreError(f"index type {factory!r} needs training vectors; add files first")
        nlist = faiss.extract_index_ivf(index).nlist if "IVF" in factory else 256
        pool = np.flatnonzero(~tuning_slots(ids)) if "IVF" in factory else np.arange(len(ids))
        pool = pool if len(pool) else np.arange(len(ids))
        sample = source.take(np.random.default_rng(0).permutation(pool)[: 64 * nlist])
        if isinstance(index, faiss.IndexIVF) and nlist >= TWO_LEVEL_FROM and len(sample) >= 39 * nlist:
            from faiss.contrib.clustering import two_level_clustering

            # k-means in two levels, sqrt(nlist) groups then lists within each: at 1M
            # vectors (4096 lists, 262k training points) 102 s -> 10 s here, recall@10
            # 0.9525 -> 0.95 at the same nprobe (benchmarks/index_speed.py). A quantizer
            # that holds nlist centroids is not trained again by index.train.
            centroids, _ = two_level_clustering(sample, int(np.sqrt(nlist)), nlist, clustering_niter=index.cp.niter)
            index.quantizer.add(centroids)
        index.train(sample)
        del sample
    if lists is not None and lists_wanted(index, len(ids), lists_from_bytes or 0):
        _fill_on_disk(index, source, lists)
    else:
        for start, vectors in source.chunks():
            index.add_with_ids(vectors, ids[start:start + len(vectors)])
    _tune(index)
    return index


def _fill_on_disk(index, source: SlotSource, lists: Path) -> None:
    """Fill the trained, empty IVF ``index`` from ``source`` with its inverted lists in the
    file ``lists``: shards of SHARD_VECTORS vectors written to a temporary folder beside it,
    then FAISS's ``merge_ondisk`` (each list written once, at its final size). The trained
    empty index is kept with it for ``empty_template`` (an index with lists on disk cannot be
    cloned)."""
    import faiss
    from faiss.contrib.ondisk import merge_ondisk

    template = faiss.clone_index(index)
    with tempfile.TemporaryDirectory(dir=lists.parent, prefix=SHARDS_PREFIX) as folder:
        names, shard = [], None
        for start, vectors in source.chunks():
            shard = faiss.clone_index(template) if shard is None else shard
            shard.add_with_ids(vectors, source.ids[start:start + len(vectors)])
            if shard.ntotal >= SHARD_VECTORS:
                names.append(_write_shard(shard, Path(folder), len(names)))
                shard = None
        if shard is not None:
            names.append(_write_shard(shard, Path(folder), len(names)))
        lists.unlink(missing_ok=True)  # left by a write killed before its commit
        with _quiet_stdout():  # FAISS prints each resize of the file on stdout
            merge_ondisk(index, names, str(lists))
    index.referenced_objects = [*getattr(index, "referenced_objects", []), _Template(template)]


class _Template:
    """The trained empty index an index with lists on disk was filled from (in its
    ``referenced_objects``, where FAISS lets Python keep objects on an index)."""

    def __init__(self, index):
        self.index = index


def _write_shard(shard, folder: Path, number: int) -> str:
    import faiss

    name = str(folder / f"{number:05d}.faiss")
    faiss.write_index(shard, name)
    return name


@contextlib.contextmanager
def _quiet_stdout():
    """File descriptor 1 on /dev/null for the duration (FAISS's C++ prints there: a CLI's
    ``--json`` output must stay clean). Process-wide: what another thread prints to stdout in
    those milliseconds is lost too (the web app logs to stderr)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def lists_path(index_path: Path) -> Path:
    """Where the index file ``index_path`` keeps its inverted lists when they are on disk."""
    return index_path.with_name(index_path.name + LISTS_SUFFIX)


def lists_wanted(index, vectors: int, from_bytes: int) -> bool:
    """Would an IVF ``index`` of ``vectors`` vectors pass ``from_bytes`` of codes and ids (and so
    keep its lists on disk)? False for any other kind."""
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    return ivf is not None and vectors * (ivf.code_size + 8) > from_bytes


def lists_on_disk(index) -> bool:
    """Does this IVF index keep its inverted lists in a file (``OnDiskInvertedLists``)?"""
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    return ivf is not None and isinstance(faiss.downcast_InvertedLists(ivf.invlists), faiss.OnDiskInvertedLists)


def tune_nprobe(index, retune: bool, recorded: bool, tuned_at: int, active, exact: bool = True) -> int | None:
    """Set an IVF index's nprobe (kept in its FAISS file): tuned on the store's own slots
    (``active()``: a SlotSource) when the index was built (``retune``), when no nprobe is
    ``recorded``, or when it was updated in place past RETUNE_DRIFT since it was last tuned at
    ``tuned_at`` vectors; kept otherwise.

    Returns
    -------
    int or None
        The nprobe just tuned; 0 where the index's is kept; None where the index is no IVF.
    """
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return None
    if retune or not recorded or not tuned_at / RETUNE_DRIFT <= index.ntotal <= tuned_at * RETUNE_DRIFT:
        ivf.nprobe = tuned_nprobe(index, active(), exact)
        return int(ivf.nprobe)
    return 0


class LiveIndex:
    """What a store searches: its base FAISS index, the vectors committed since the base was
    written (a delta index of the same kind, a copy of the base's empty ``template``), and the
    ids removed since (tombstones), which every search leaves out.

    Never changed in place: ``extended`` returns a new LiveIndex that shares the base, so the
    threads of a server searching the previous one are not disturbed by a new generation.

    Parameters
    ----------
    base : faiss.Index
    template : faiss.Index or None
        The base's kind, trained and empty (None: no delta can be added).
    delta : faiss.Index or None
        The vectors added since the base.
    dead : ndarray of int64
        Tombstoned ids, sorted.
    generations : tuple of int
        The delta generations applied, oldest first.
    """

    def __init__(self, base, template=None, delta=None, dead: np.ndarray | None = None, generations: tuple = ()):
        self.index, self.template, self.delta = base, template, delta
        self.dead = np.zeros(0, np.int64) if dead is None else dead
        self.generations = tuple(generations)
        self._selector = self._tombstone_selector()  # made before the index is shared: threads only read it

    @property
    def ntotal(self) -> int:
        """Live vectors: the base's and the delta's, less the tombstoned."""
        return int(self.index.ntotal + (self.delta.ntotal if self.delta is not None else 0) - len(self.dead))

    def extended(self, ids: np.ndarray, vectors: np.ndarray, removed: np.ndarray, generation: int) -> "LiveIndex":
        """A new LiveIndex with a delta applied: ``vectors`` (n, E) added under ``ids``,
        ``removed`` ids tombstoned."""
        import faiss

        if self.template is None:
            raise StoreError("the store's base index has no template for deltas; repair the store")
        delta = faiss.clone_index(self.delta if self.delta is not None else self.template)  # copy on write
        if len(ids):
            delta.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.asarray(ids, np.int64))
        dead = np.union1d(self.dead, np.asarray(removed, np.int64)) if len(removed) else self.dead
        return LiveIndex(self.index, self.template, delta, dead, self.generations + (generation,))

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, E) -> inner products (Q, k), ids (Q, k), best first over base and delta, the
        tombstoned left out; -1 where fewer than k exist."""
        params = self._search_params()
        out = [self.index.search(vectors, k, params=params)]
        if self.delta is not None and self.delta.ntotal:
            out.append(self.delta.search(vectors, k, params=params))
        if len(out) == 1:
            return out[0]
        scores = np.concatenate([o[0] for o in out], axis=1)  # (Q, 2k)
        ids = np.concatenate([o[1] for o in out], axis=1)
        scores = np.where(ids >= 0, scores, -np.inf)
        best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, best, 1).astype(np.float32), np.take_along_axis(ids, best, 1)

    def _tombstone_selector(self):
        """The FAISS selector of every id but the tombstoned (None without any); it and the
        batch it reads stay referenced here, since FAISS holds raw pointers to them."""
        import faiss

        if not len(self.dead):
            return None
        self._batch = faiss.IDSelectorBatch(self.dead)
        return faiss.IDSelectorNot(self._batch)

    def _search_params(self):
        """Search parameters that leave the tombstones out (None without any), keeping the
        index's own nprobe or efSearch: new for every search, since an id map swaps its own
        selector into them while it searches (two threads must not share them)."""
        import faiss

        if self._selector is None:
            return None
        ivf = faiss.try_extract_index_ivf(self.index)
        inner = faiss.downcast_index(self.index.index) if hasattr(self.index, "id_map") else None
        if ivf is not None:
            return faiss.SearchParametersIVF(sel=self._selector, nprobe=ivf.nprobe)
        if isinstance(inner, faiss.IndexHNSW):
            return faiss.SearchParametersHNSW(sel=self._selector, efSearch=inner.hnsw.efSearch)
        return faiss.SearchParameters(sel=self._selector)

    def materialised(self):
        """The base with the delta merged into it and the tombstones removed, changed in place
        (the writer's own copy, before it writes a new base); None where the index cannot (HNSW,
        an id map over IVF, lists on disk): rebuild it from the store's slots instead."""
        if lists_on_disk(self.index):
            return None
        if not removes_in_place(self.index):
            return None if (self.delta is not None or len(self.dead)) else self.index
        if self.delta is not None and self.delta.ntotal:
            self.index.merge_from(self.delta, 0)
        if len(self.dead):
            self.index.remove_ids(self.dead)
        return self.index

    def stored_ids(self) -> np.ndarray | None:
        """The live ids (base and delta, less the tombstoned); None if the index cannot say."""
        parts = [_stored_ids(i) for i in (self.index, self.delta) if i is not None]
        if any(p is None for p in parts):
            return None
        ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return ids[~np.isin(ids, self.dead)]


def empty_template(index):
    """The index's kind, trained, with its search settings and no vectors: what deltas are
    added to (``LiveIndex``)."""
    import faiss

    kept = [o.index for o in getattr(index, "referenced_objects", []) if isinstance(o, _Template)]
    if kept:  # lists on disk: kept when it was built
        template = faiss.clone_index(kept[0])
        template.nprobe = faiss.extract_index_ivf(index).nprobe
        return template
    template = faiss.clone_index(index)
    template.reset()
    return template


def write_index(index, path: Path) -> None:
    """Write ``index`` to the file ``path``."""
    import faiss

    faiss.write_index(index, str(path))


def read_index(path: Path, cli_hint: str, mapped: bool = False):
    """The FAISS index in ``path``, tuned for search; None where the file does not exist.
    A corrupt file raises StoreError (with ``cli_hint``, how to repair it).

    ``mapped``: memory-map it read-only instead of reading it (an IVF index's inverted lists
    stay in the file, read through the page cache as probes touch them: a 1M-slot index opened
    in 3 ms with 45 MB resident, not 564 MB, the same results, each search about twice as
    slow). Only for an index that is never changed in place: a reader's base."""
    import faiss

    if not path.exists():
        return None
    lists = lists_path(path)
    on_disk = lists.exists()  # lists beside it: never changed in place
    try:
        if on_disk:
            with _quiet_stdout():  # FAISS prints where it found the lists
                index = faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY)
        else:
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mapped else 0)
    except RuntimeError as error:
        raise StoreError(f"{path}: corrupt FAISS index ({str(error).splitlines()[0][:120]}); "
                         "rebuild it from SQLite with Store.repair()", cli_hint=cli_hint) from None
    if on_disk:  # a short lists file would be mapped past its end: a crash at the first probe there
        wanted = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists).totsize
        if lists.stat().st_size < wanted:
            raise StoreError(f"{lists}: inverted lists file cut short ({lists.stat().st_size} of {wanted} bytes); "
                             "rebuild it from SQLite with Store.repair()", cli_hint=cli_hint)
    _tune(index)
    return index


def check_index(live: LiveIndex, ids: np.ndarray, probe_ids: np.ndarray, probes: np.ndarray, recorded_nprobe: int,
                factory: str = "Flat") -> list[str]:
    """Problems of the ``live`` index (base, delta, tombstones) of kind ``factory`` against the
    store's active slots (``ids``, ascending; ``probes`` (P, E): the embeddings of a sample
    ``probe_ids`` of them, each of which the index must find as itself) and the nprobe its meta
    records (0: none): one line each, empty when it holds exactly them."""
    import faiss

    problems = []
    ivf = faiss.try_extract_index_ivf(live.index)
    if ivf is not None and recorded_nprobe and ivf.nprobe != recorded_nprobe:
        problems.append(f"the FAISS index searches {ivf.nprobe} lists, meta records nprobe {recorded_nprobe}")
    if live.ntotal != len(ids):
        problems.append(f"FAISS holds {live.ntotal} vectors, SQLite {len(ids)} active slots")
    else:
        stored = live.stored_ids()
        if stored is not None and not np.array_equal(np.sort(stored), ids):
            problems.append("FAISS vector ids differ from SQLite's active slots")
        elif len(ids):
            probe, expected = np.ascontiguousarray(probes, np.float32), probe_ids
            if ivf is not None and not exact_scores(factory):
                # compressed codes: near copies share a code, so a vector need not find itself
                # first; its own code must still score it as itself (PQ32: 0.97 or more, another
                # slot's about 0: a 1500-file test store)
                wrong = own_code_scores(live, probe, expected) < OWN_CODE_SCORE
            else:
                wrong = live.search(probe, 1)[1][:, 0] != expected
            if wrong.mean() > 0.05:
                problems.append("FAISS vectors differ from SQLite's embeddings")
    return problems


OWN_CODE_SCORE = 0.5  # the least inner product of a unit vector with its own compressed code (check_index)


def own_code_scores(live: LiveIndex, vectors: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(n,) the inner product an IVF index (base or delta) gives each of ``vectors`` against
    the code it stores under the matching id: the search restricted to that id, in the lists
    the vector falls in; -inf where neither holds it."""
    import faiss

    out = np.full(len(ids), -np.inf, np.float32)
    for n, (vector, wanted) in enumerate(zip(np.ascontiguousarray(vectors, np.float32), ids)):
        batch = np.array([wanted], np.int64)
        selector = faiss.IDSelectorBatch(len(batch), faiss.swig_ptr(batch))
        for index in (live.index, live.delta):
            if index is None:
                continue
            ivf = faiss.extract_index_ivf(index)
            params = faiss.SearchParametersIVF(sel=selector, nprobe=min(ivf.nlist, 8))
            scores, found = index.search(vector[None], 1, params=params)
            if found[0, 0] == wanted:
                out[n] = scores[0, 0]
                break
    return out


def exact_scores(factory: str) -> bool:
    """Does an index of this factory string return exact inner products? Uncompressed vectors
    do, and so, to within 1e-4 of a cosine, do float16 ones (SQfp16, SQbf16); PQ, 8-bit and
    smaller codes do not."""
    kind = factory.replace("SQfp16", "").replace("SQbf16", "")
    return not any(tag in kind for tag in ("PQ", "SQ", "LSH", "RaBitQ"))


def removes_in_place(index) -> bool:
    """Can this index drop vectors without a rebuild? A Flat one under its id map can; an IVF
    holding its own ids can (it drops them from its lists, the trained centroids stay); HNSW
    and an id map over IVF (stores before IVF kept its own ids) cannot."""
    import faiss

    inner = faiss.downcast_index(index.index) if hasattr(index, "id_map") else index
    return isinstance(inner, faiss.IndexFlat) or isinstance(index, faiss.IndexIVF)  # an id map is no IVF


def _stored_ids(index) -> np.ndarray | None:
    """The vector ids an index holds: its id map's, or an IVF's inverted lists'; None if unknown."""
    import faiss

    if hasattr(index, "id_map"):
        return faiss.vector_to_array(index.id_map)
    if isinstance(index, faiss.IndexIVF):
        lists = index.invlists
        parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                 for i in range(index.nlist) if lists.list_size(i)]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return None


def _tune(index) -> None:
    import faiss

    # FAISS scans a Flat index once per query below this many queries (128000 in this build):
    # one query file's 8 slots then read 100k vectors 8 times. A matrix product reads them once
    # (8 slots at 100k: 33 ms -> 13 ms here, benchmarks/index_speed.py).
    faiss.cvar.distance_compute_blas_threshold = min(faiss.cvar.distance_compute_blas_threshold, 4)

    inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = HNSW_EF_SEARCH


def tuned_nprobe(index, source: SlotSource, exact: bool = True) -> int:
    """The IVF lists a search probes: the fewest (a power of two) at which TUNE_QUERIES of the
    store's own active slots (``source``; ``tuning_slots``, which did not train the index)
    find recall@10 >= IVF_RECALL of exact search, each leaving out its own vector; times
    NPROBE_MARGIN, at least MIN_NPROBE. Compressed codes (``exact`` False: PQ, 8-bit) are
    judged as a query uses them: a true neighbour counts when it is among the RERANK_DEPTH x 11
    nearest by code, which the query then re-scores exactly (PQ32 at 1M synthetic slots never
    reaches 0.95 on its own codes: every list would be probed).

    The store's own slots stand for queries because a query worth answering is a speaker the
    corpus holds. A query of a speaker the corpus never heard has no like to find, and its 10
    nearest stored slots scatter over many lists (benchmarks/index_speed.py measures both)."""
    import faiss

    ivf = faiss.extract_index_ivf(index)
    ids = source.ids
    k = min(10, len(ids) - 1)
    if k < 1:
        return ivf.nlist
    depth = min(len(ids), (k + 1) * (1 if exact else RERANK_DEPTH))
    pool = np.flatnonzero(tuning_slots(ids))
    pool = pool if len(pool) >= 32 else np.arange(len(ids))  # a tiny store: all its slots trained it
    pick = np.random.default_rng(0).choice(pool, size=min(TUNE_QUERIES, len(pool)), replace=False)
    queries = source.take(pick)

    def others(found: np.ndarray, own: int, keep: int = k) -> set:
        return set(found[(found != own) & (found >= 0)][:keep].tolist())

    truth = [others(ids[row], ids[q]) for row, q in zip(_exact_top(queries, source, k + 1), pick)]
    nprobe = 1
    while nprobe < ivf.nlist:
        ivf.nprobe = nprobe
        _, found = index.search(queries, depth)
        recall = np.mean([len(others(row, ids[q], depth) & want) / k for row, q, want in zip(found, pick, truth)])
        if recall >= IVF_RECALL:
            break
        nprobe *= 2
    return int(min(ivf.nlist, max(MIN_NPROBE, NPROBE_MARGIN * nprobe)))


def tuning_slots(ids: np.ndarray) -> np.ndarray:
    """Which slots (by id: the same ones at every write) stay out of IVF training, 1 in 64, to
    tune nprobe on: like a new recording, they did not place the centroids. At 150k synthetic
    vectors their recall@10 followed fresh queries' within 0.01 at every nprobe from 1 to 32,
    where training slots read up to 0.025 lower (benchmarks/index_speed.py --recall-curve)."""
    mixed = np.asarray(ids, np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing
    return (mixed >> np.uint64(58)) == 0


def _exact_top(queries: np.ndarray, vectors, k: int, chunk: int = 65_536) -> np.ndarray:
    """(Q, k) rows of ``vectors`` (an array, or a SlotSource read chunk by chunk) with the k
    largest inner products per query, in no order: matrix products over chunks (128 queries
    at 1M: 3.0 s here, faiss.knn 5.7 s)."""
    best_rows = np.zeros((len(queries), 0), np.int64)
    best = np.zeros((len(queries), 0), np.float32)
    source = vectors if isinstance(vectors, SlotSource) else SlotSource.of(np.arange(len(vectors)), vectors, chunk)
    for start, block in source.chunks():
        part = queries @ block.T  # (Q, c)
        sims = np.concatenate([best, part], axis=1)
        rows = np.concatenate([best_rows, np.broadcast_to(np.arange(start, start + part.shape[1]), part.shape)], axis=1)
        keep = np.argpartition(-sims, min(k, sims.shape[1]) - 1, axis=1)[:, :k]
        best, best_rows = np.take_along_axis(sims, keep, 1), np.take_along_axis(rows, keep, 1)
    return best_rows
