"""A store that grows by deltas (weighter.index.store, weighter.index.faiss_index.LiveIndex):
a write appends what it adds and removes instead of rewriting the index; readers catch up by
reading the new deltas only; a new base folds them in; killed writes and stores from before
deltas keep working."""

import json
import os
import signal

import numpy as np
import pytest

from test_index import CHILD_PRELUDE, DIM, _python, make_set
from weighter.index import Store, query_store
from weighter.index import faiss_index


@pytest.fixture
def basis():
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(DIM, DIM)))
    return q.astype(np.float32)


def _grow(store, tmp_path, basis, names, seed=0):
    """Add files named ``names``, each with two of the 16 speakers."""
    rng = np.random.default_rng(seed)
    sets = [(make_set(tmp_path / n, list(rng.choice(DIM, 2, replace=False)), basis, seed=seed + i), f"h-{n}")
            for i, n in enumerate(names)]
    with store.writing():
        return store.apply(sets)


def _deltas_on(store):
    store.delta_min_base, store.delta_share = 0, 10.0  # small test stores: deltas at every write
    return store


def _ranking(store, query):
    return [(os.path.basename(m.file), m.stored_slot, round(m.score, 4)) for m in query_store(store, query, k=8)]


@pytest.mark.parametrize("index_type", ["Flat", "IVF4,Flat", "HNSW16,Flat"])
def test_writes_go_as_deltas_and_search_as_one_index(tmp_path, basis, index_type):
    store = _deltas_on(Store(tmp_path / "store", create=True))
    with store.writing():
        store.apply([(make_set(tmp_path / f"a{i}.wav", [i % DIM, (i + 3) % DIM], basis, seed=i), f"h{i}")
                     for i in range(40)], index_type=index_type)
    base = sorted(p.name for p in store.directory.glob("vectors-*.faiss"))
    base_bytes = (store.directory / base[0]).read_bytes()
    reader = Store(store.directory, read_only=True)
    query = make_set(tmp_path / "q.wav", [5], basis, seed=99)
    _ranking(reader, query)  # the reader holds the base generation
    _grow(store, tmp_path, basis, [f"b{i}.wav" for i in range(10)], seed=100)
    with store.writing():
        store.apply([], [tmp_path / "a5.wav", tmp_path / "b3.wav"])  # tombstones, one in the base, one in a delta
    assert sorted(p.name for p in store.directory.glob("vectors-*.faiss")) == base  # the base was not rewritten
    assert (store.directory / base[0]).read_bytes() == base_bytes
    assert len(list(store.directory.glob("delta-*.npz"))) == 2 and store.info().deltas == 2
    assert store.check() == [] and reader.check() == []
    counted = store.db.execute("SELECT COUNT(*) FROM slots WHERE active = 1").fetchone()[0]
    assert store._active_after(0, 0) == counted == store.vector_count()  # from meta, no count, no catch-up
    seen = _ranking(reader, query)  # caught up: the new files found, the removed ones gone
    files = {f for f, _, _ in seen}
    assert "a5.wav" not in files and "b3.wav" not in files
    assert reader.vector_count() == store.info().active_slots == 2 * (40 + 10 - 2)
    # the same files written in one go, as one index, rank the same
    whole = Store(tmp_path / "whole", create=True)
    with whole.writing():
        whole.apply([(reader.embedding_set(i), "h") for i in
                     [r[0] for r in reader.db.execute("SELECT id FROM files ORDER BY id")]], index_type="Flat")
    assert [(f, s) for f, s, _ in seen] == [(f, s) for f, s, _ in _ranking(whole, query)]
    # folding the deltas into a new base changes nothing a query sees
    with store.writing():
        store.optimize()
    assert store.info().deltas == 0 and not list(store.directory.glob("delta-*.npz"))
    assert len(list(store.directory.glob("vectors-*.faiss"))) == 1 and store.check() == []
    assert [(f, s) for f, s, _ in _ranking(store, query)] == [(f, s) for f, s, _ in seen]
    reader.close()
    whole.close()
    store.close()


def test_a_reader_catches_up_by_reading_only_the_new_deltas(tmp_path, basis, monkeypatch):
    store = _deltas_on(Store(tmp_path / "store", create=True))
    _grow(store, tmp_path, basis, [f"a{i}.wav" for i in range(20)])
    reader = Store(store.directory, read_only=True)
    reader.vector_count()
    reads = []
    real = faiss_index.read_index
    monkeypatch.setattr(faiss_index, "read_index", lambda *a, **kw: reads.append(a[0].name) or real(*a, **kw))
    for round_ in range(3):
        _grow(store, tmp_path, basis, [f"b{round_}-{i}.wav" for i in range(3)], seed=round_ + 1)
        assert reader.vector_count() == store.info().active_slots
    assert reads == []  # no base index read again
    base_before = reader._live.index
    with store.writing():
        store.apply([], [], compact=True)
    assert reader.vector_count() == store.info().active_slots and reader._live.index is not base_before
    assert [r for r in reads if r.startswith("vectors-")]  # a new base is read whole
    reader.close()
    store.close()


def test_deltas_give_way_to_a_new_base_past_their_share(tmp_path, basis):
    store = Store(tmp_path / "store", create=True)
    store.delta_min_base, store.delta_share = 0, 0.25
    _grow(store, tmp_path, basis, [f"a{i}.wav" for i in range(40)])  # base: 80 vectors
    kinds = []
    for round_ in range(6):  # 4 files (8 vectors) each: 0.1 of the base
        _grow(store, tmp_path, basis, [f"b{round_}-{i}.wav" for i in range(4)], seed=round_ + 1)
        kinds.append(store.info().deltas)
    # 80 vectors: a third delta (24) would pass 0.25 of the base (20): a new base of 104; then 24 <= 26
    assert kinds == [1, 2, 0, 1, 2, 3]
    assert json.loads(store.meta("base_vectors")) == 2 * (40 + 12) and store.check() == []
    store.close()


def test_kill_9_while_writing_a_delta_keeps_the_last_generation(tmp_path, basis):
    store = _deltas_on(Store(tmp_path / "store", create=True))
    _grow(store, tmp_path, basis, [f"a{i}.wav" for i in range(20)])
    _grow(store, tmp_path, basis, ["b.wav"], seed=5)
    before = store.info()
    assert before.deltas == 1
    child = _python(CHILD_PRELUDE.format(tests=os.path.dirname(__file__), store=str(store.directory)) + """
    store.delta_min_base, store.delta_share = 0, 10.0
    with store.writing():
        store.apply([(make_set("/x/new.wav", [9], basis), "h")], ["{b}"],
                    after_faiss_written=lambda: os.kill(os.getpid(), signal.SIGKILL))
    """.replace("{b}", str(tmp_path / "b.wav")), tmp_path)
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    reopened = Store(store.directory)
    assert reopened.generation == before.generation and reopened.info().files == before.files
    assert reopened.check() == []
    assert len(list(store.directory.glob("delta-*.npz"))) == 2  # the orphan of the killed write
    with reopened.writing():
        pass
    assert len(list(store.directory.glob("delta-*.npz"))) == 1  # removed by the next writer
    store.close()
    reopened.close()


def test_a_store_from_before_deltas_opens_and_gains_a_base_on_its_next_write(tmp_path, basis):
    store = Store(tmp_path / "store", create=True)
    _grow(store, tmp_path, basis, [f"a{i}.wav" for i in range(20)])
    for key in ("base_generation", "base_vectors", "deltas"):  # as the version before deltas left it
        store.db.execute("DELETE FROM meta WHERE key = ?", (key,))
    for template in store.directory.glob("template-*.faiss"):
        template.unlink()
    store.close()
    old = _deltas_on(Store(tmp_path / "store"))
    query = make_set(tmp_path / "q.wav", [3], basis, seed=9)
    before = _ranking(old, query)
    assert old.check() == [] and before
    _grow(old, tmp_path, basis, ["b.wav"], seed=3)  # no template yet: a whole new base
    assert old.info().deltas == 0 and old.meta("base_vectors") is not None
    _grow(old, tmp_path, basis, ["c.wav"], seed=4)  # now a delta
    assert old.info().deltas == 1 and old.check() == []
    old.close()


def test_live_index_leaves_tombstones_out_of_every_search():
    import faiss

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    base = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    base.add_with_ids(x[:200], np.arange(200))
    live = faiss_index.LiveIndex(base, faiss_index.empty_template(base))
    newer = live.extended(np.arange(200, 300), x[200:], np.array([7, 250]), generation=2)
    assert live.ntotal == 200 and newer.ntotal == 298 and base.ntotal == 200  # the base is never changed
    _, found = newer.search(x[[7, 250, 120]], 5)
    assert 7 not in found and 250 not in found and found[2, 0] == 120
    _, found = newer.search(x[[260]], 1)
    assert found[0, 0] == 260  # a delta vector is found
    assert set(newer.stored_ids().tolist()) == set(range(300)) - {7, 250}


def test_index_optimize_from_the_cli_folds_the_deltas(tmp_path, basis):
    from click.testing import CliRunner

    from weighter.cli import main

    store = _deltas_on(Store(tmp_path / "store", create=True))
    _grow(store, tmp_path, basis, [f"a{i}.wav" for i in range(20)])
    _grow(store, tmp_path, basis, ["b.wav", "c.wav"], seed=7)
    assert store.info().deltas == 1
    store.close()
    result = CliRunner().invoke(main, ["index", "optimize", "--store", str(tmp_path / "store"), "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["deltas_folded"] == 1 and answer["active_vectors"] == 2 * 22
    with Store(tmp_path / "store") as reopened:
        assert reopened.info().deltas == 0 and reopened.check() == []


def test_kill_9_while_writing_a_new_base_keeps_the_base_and_its_deltas(tmp_path, basis):
    store = _deltas_on(Store(tmp_path / "store", create=True))
    _grow(store, tmp_path, basis, [f"a{i}.wav" for i in range(20)])
    _grow(store, tmp_path, basis, ["b.wav", "c.wav"], seed=5)
    with store.writing():
        store.apply([], [tmp_path / "a3.wav"])
    before, query = store.info(), make_set(tmp_path / "q.wav", [4], basis, seed=9)
    ranking = _ranking(store, query)
    assert before.deltas == 2
    child = _python(CHILD_PRELUDE.format(tests=os.path.dirname(__file__), store=str(store.directory)) + """
    with store.writing():
        store.apply([], [], compact=True, after_faiss_written=lambda: os.kill(os.getpid(), signal.SIGKILL))
    """, tmp_path)
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    reopened = Store(store.directory)
    assert reopened.generation == before.generation and reopened.info().deltas == 2
    assert reopened.check() == [] and _ranking(reopened, query) == ranking
    assert len(list(store.directory.glob("vectors-*.faiss"))) == 2  # the killed write's new base, an orphan
    with reopened.writing():
        pass
    assert len(list(store.directory.glob("vectors-*.faiss"))) == 1 and len(list(store.directory.glob("delta-*"))) == 2
    store.close()
    reopened.close()


def test_a_reader_maps_a_large_base_and_finds_what_a_writer_finds(tmp_path, basis):
    import faiss

    store = _deltas_on(Store(tmp_path / "store", create=True))
    with store.writing():
        store.apply([(make_set(tmp_path / f"a{i}.wav", [i % DIM], basis, seed=i), f"h{i}") for i in range(40)],
                    index_type="IVF4,Flat")
    _grow(store, tmp_path, basis, ["b.wav", "c.wav"], seed=3)
    reader = Store(store.directory, read_only=True)
    reader.map_from_bytes = 0  # as a base past a quarter of RAM
    query = make_set(tmp_path / "q.wav", [2, 7], basis, seed=9)
    assert _ranking(reader, query) == _ranking(store, query)
    lists = faiss.extract_index_ivf(reader._live.index).invlists
    assert "OnDisk" in type(faiss.downcast_InvertedLists(lists)).__name__  # mapped, not read
    assert "OnDisk" not in type(faiss.downcast_InvertedLists(faiss.extract_index_ivf(store._live.index).invlists)).__name__
    reader.close()
    store.close()


def test_threads_search_one_live_index_with_tombstones_at_once():
    import threading

    import faiss

    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    base = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))  # an id map swaps its selector into the parameters
    base.add_with_ids(x[:1500], np.arange(1500))
    dead = np.arange(0, 2000, 7)
    live = faiss_index.LiveIndex(base, faiss_index.empty_template(base)).extended(
        np.arange(1500, 2000), x[1500:], dead, generation=2)
    wrong = []

    def search(seed):
        queries = x[np.random.default_rng(seed).integers(0, 2000, 64)]
        for _ in range(50):
            _, found = live.search(queries, 10)
            if np.isin(found, dead).any() or (found < 0).any():
                wrong.append(seed)

    threads = [threading.Thread(target=search, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_a_failed_write_leaves_no_trace_in_what_the_writer_reads_next(tmp_path, basis, monkeypatch):
    """A write that fails after changing meta inside its transaction (and reading it back)
    rolls back, and the store's own reads (generation, search) show the state before it."""
    store = _deltas_on(Store(tmp_path / "store", create=True))
    _grow(store, tmp_path, basis, [f"a{i}.wav" for i in range(30)])
    generation, count = store.generation, store.vector_count()
    query = make_set(tmp_path / "q.wav", [5], basis, seed=99)
    ranking = _ranking(store, query)
    set_meta = store.set_meta

    def failing(key, value):
        set_meta(key, value)
        if key == "deltas":  # the write's last change to meta: read it back, then fail
            assert store.generation == generation + 1
            raise OSError("disk full")

    monkeypatch.setattr(store, "set_meta", failing)
    with pytest.raises(OSError), store.writing():
        store.apply([(make_set(tmp_path / "b.wav", [5], basis, seed=7), "h-b")])
    assert store.generation == generation and store.vector_count() == count
    assert _ranking(store, query) == ranking and store.check() == []


def test_past_map_from_bytes_a_base_keeps_its_lists_on_disk_and_finds_what_one_in_memory_finds(tmp_path, basis,
                                                                                             capfd):
    """A writer builds a large IVF base as shards merged into a lists file beside it (FAISS's
    merge_ondisk); queries, deltas, a new base and a read-only reader find exactly what the same
    store with its lists in memory finds; the old lists go with the old base; nothing is printed."""
    stores = {}
    for name, limit in (("disk", 0), ("memory", 1 << 40)):
        store = _deltas_on(Store(tmp_path / name, create=True))
        store.map_from_bytes = limit
        with store.writing():
            store.apply([(make_set(tmp_path / f"a{i}.wav", [i % DIM, (i + 5) % DIM], basis, seed=i), f"h{i}")
                         for i in range(60)], index_type="IVF4,SQ8")
        stores[name] = store
    disk, memory = stores["disk"], stores["memory"]
    assert [p.name for p in disk.directory.glob("vectors-*.lists")] == ["vectors-000001.faiss.lists"]
    assert not list(memory.directory.glob("*.lists")) and not list(disk.directory.glob(".shards-*"))
    assert faiss_index.lists_on_disk(disk._live.index) and not faiss_index.lists_on_disk(memory._live.index)
    assert disk.info().lists_file == "vectors-000001.faiss.lists" and memory.info().lists_file is None
    query = make_set(tmp_path / "q.wav", [3, 9], basis, seed=77)
    assert _ranking(disk, query) == _ranking(memory, query)
    for store in (disk, memory):  # a delta, then a new base folding it in
        _grow(store, tmp_path, basis, [f"b{i}.wav" for i in range(6)], seed=200)
        assert store.info().deltas == 1
    assert _ranking(disk, query) == _ranking(memory, query)
    for store in (disk, memory):
        with store.writing():
            store.apply([], [tmp_path / "a7.wav"], rebuild=True)
    assert [p.name for p in disk.directory.glob("vectors-*")] == ["vectors-000003.faiss", "vectors-000003.faiss.lists"]
    assert _ranking(disk, query) == _ranking(memory, query)
    reader = Store(disk.directory, read_only=True)
    assert _ranking(reader, query) == _ranking(memory, query) and reader.check() == [] and disk.check() == []
    printed = capfd.readouterr().out
    assert "resizing" not in printed and "ONDISK" not in printed
    for store in (reader, disk, memory):
        store.close()


@pytest.mark.parametrize("when", ["merging shards", "before the commit"])
def test_kill_9_while_building_lists_on_disk_keeps_the_last_base(tmp_path, basis, when):
    """A writer killed while it writes a new base's shards, or after its lists file is whole but
    before SQLite commits, leaves the last base (its lists on disk) in use; the next write
    removes the killed write's shards and lists."""
    store = _deltas_on(Store(tmp_path / "store", create=True))
    store.map_from_bytes = 0
    with store.writing():
        store.apply([(make_set(tmp_path / f"a{i}.wav", [i % DIM, (i + 5) % DIM], basis, seed=i), f"h{i}")
                     for i in range(40)], index_type="IVF4,SQ8")
    _grow(store, tmp_path, basis, ["b.wav", "c.wav"], seed=5)
    before, query = store.info(), make_set(tmp_path / "q.wav", [4], basis, seed=9)
    ranking = _ranking(store, query)
    kill = ("faiss_index.SHARD_VECTORS = faiss_index.SOURCE_CHUNK = 8\n"
            "    written = faiss_index._write_shard\n"
            "    def write_and_die(shard, folder, number):\n"
            "        name = written(shard, folder, number)\n"
            "        if number == 2:\n"
            "            os.kill(os.getpid(), signal.SIGKILL)\n"
            "        return name\n"
            "    faiss_index._write_shard = write_and_die\n"
            "    after = None" if when == "merging shards" else
            "after = lambda: os.kill(os.getpid(), signal.SIGKILL)")
    child = _python(CHILD_PRELUDE.format(tests=os.path.dirname(__file__), store=str(store.directory)) + f"""
    from weighter.index import faiss_index
    store.map_from_bytes = 0
    {kill}
    with store.writing():
        store.apply([], [], compact=True, after_faiss_written=after)
    """, tmp_path)
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr.read()
    left = {p.name for p in store.directory.iterdir()}
    assert any(n.startswith(".shards-") for n in left) if when == "merging shards" else \
        "vectors-000003.faiss.lists" in left  # the killed write's orphans
    reopened = Store(store.directory)
    assert reopened.generation == before.generation and reopened.check() == [] and _ranking(reopened, query) == ranking
    with reopened.writing():
        pass
    assert sorted(p.name for p in store.directory.glob("vectors-*")) == ["vectors-000001.faiss",
                                                                           "vectors-000001.faiss.lists"]
    assert not list(store.directory.glob(".shards-*"))
    store.close()
    reopened.close()


def test_a_lists_file_cut_short_is_reported_and_repaired(tmp_path, basis):
    """A truncated lists file would be mapped past its end (a crash at the first probe there):
    opening it names the file and the reason, and ``repair`` builds it again from SQLite."""
    from weighter.errors import StoreError

    store = Store(tmp_path / "store", create=True)
    store.map_from_bytes = 0
    with store.writing():
        store.apply([(make_set(tmp_path / f"a{i}.wav", [i % DIM], basis, seed=i), f"h{i}") for i in range(40)],
                    index_type="IVF4,SQ8")
    query = make_set(tmp_path / "q.wav", [2], basis, seed=9)
    ranking = _ranking(store, query)
    lists = store.directory / store.info().lists_file
    store.close()
    os.truncate(lists, lists.stat().st_size // 2)
    broken = Store(store.directory)
    broken.map_from_bytes = 0
    with pytest.raises(StoreError, match="cut short"):
        query_store(broken, query)
    with broken.writing():
        broken.repair()
    assert _ranking(broken, query) == ranking and broken.check() == []
    broken.close()
