import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from weighter.cli import main
from weighter.embedding_set import EmbeddingSet
from weighter.embedder.checkpoint import ModelMetadata
from weighter.index import Store, StoreError, query_store
from weighter.index.store import (EXACT_LIMIT, IVF_RECALL, MAX_SLOTS, MIN_NPROBE, SLOT_BITS, TWO_LEVEL_FROM, _exact_top,
                                  auto_factory)

DIM = 16


def make_set(path, speakers, basis, model_id="m1", noise=0.05, seed=0, rate=10.0, seconds=20.0):
    """An embedding set whose active slots are the given speakers' vectors (+ noise); one
    inactive slot; speaker i is heard in the i-th quarter of the file."""
    rng = np.random.default_rng(seed)
    emb = [basis[s] + rng.normal(0, noise, DIM) for s in speakers] + [rng.normal(0, 1, DIM)]
    emb = np.stack([e / np.linalg.norm(e) for e in emb]).astype(np.float32)
    steps = int(seconds * rate)
    weights = np.zeros((len(emb), steps), np.float32)
    for i in range(len(speakers)):
        weights[i, i * steps // 4:(i + 1) * steps // 4] = 0.9
    conf = np.array([0.9] * len(speakers) + [0.1], np.float32)
    return EmbeddingSet(str(path), emb, conf, conf >= 0.5, weights, rate, seconds, model_id)


@pytest.fixture
def basis():
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(DIM, DIM)))
    return q.astype(np.float32)


@pytest.fixture
def store(tmp_path, basis):
    files = {"a.wav": [0, 1], "b.wav": [1, 2], "c.wav": [3], "d.wav": [0], "e.wav": [4, 5]}
    s = Store(tmp_path / "store", create=True)
    with s.writing():
        s.apply([(make_set(tmp_path / f, spk, basis, seed=i), f"hash-{f}") for i, (f, spk) in enumerate(files.items())])
    return s


def test_query_ranks_files_sharing_a_like_and_gives_spans(store, tmp_path, basis):
    q = make_set(tmp_path / "new.wav", [1, 3], basis, seed=9)
    matches = query_store(store, q, k=10)
    files = [os.path.basename(m.file) for m in matches]
    assert set(files[:3]) == {"a.wav", "b.wav", "c.wav"}  # share speaker 1 or 3
    best = {os.path.basename(m.file): m for m in matches}
    assert best["c.wav"].query_slot == 1 and best["c.wav"].stored_slot == 0
    assert best["c.wav"].query_spans == [(5.0, 10.0)] and best["c.wav"].stored_spans == [(0.0, 5.0)]
    assert best["a.wav"].stored_slot == 1 and best["a.wav"].stored_spans == [(5.0, 10.0)]
    assert all(m.score < 0.5 for m in matches[3:])
    only = query_store(store, q, k=10, slot=1)  # speaker 3 alone
    assert os.path.basename(only[0].file) == "c.wav" and only[1].score < 0.5


def test_a_stored_file_does_not_find_itself(store, tmp_path):
    a = store.embedding_set(store.file_id(tmp_path / "a.wav"))
    files = [os.path.basename(m.file) for m in query_store(store, a, k=3)]
    assert "a.wav" not in files and set(files[:2]) == {"b.wav", "d.wav"}


def test_replace_remove_and_check(store, tmp_path, basis):
    assert store.info().files == 5 and store.info().active_slots == 8 and store.check() == []
    with store.writing():
        store.apply([(make_set(tmp_path / "a.wav", [7], basis), "hash-a2")])  # changed content
        store.apply([], remove=[tmp_path / "e.wav"])
    info = store.info()
    assert info.files == 4 and info.active_slots == 5 and store.check() == []
    assert store.known_hash(tmp_path / "a.wav") == "hash-a2"
    assert len(list((tmp_path / "store").glob("vectors-*.faiss"))) == 1  # old generations deleted


def test_vector_ids_name_their_file_and_slot_and_are_never_reused(store, tmp_path, basis):
    rows = store.db.execute("SELECT id, file_id, slot FROM slots").fetchall()
    files, slots = store.owners(np.array([r[0] for r in rows]))
    assert files.tolist() == [r[1] for r in rows] and slots.tolist() == [r[2] for r in rows]
    before = {r[0] for r in rows}
    with store.writing():
        store.apply([], remove=[tmp_path / "e.wav"])  # the highest file id goes ...
        store.apply([(make_set(tmp_path / "f.wav", [4], basis), "hash-f")])  # ... and a new file comes
    new = {r[0] for r in store.db.execute("SELECT slots.id FROM slots JOIN files ON files.id = slots.file_id "
                                          "WHERE files.path LIKE '%f.wav'")}
    assert new and not new & before and store.check() == []


def test_a_set_with_more_slots_than_a_store_holds_is_refused(store, tmp_path, basis):
    from weighter.index.store import MAX_SLOTS

    n = MAX_SLOTS + 1
    big = EmbeddingSet(str(tmp_path / "big.wav"), np.tile(basis[:1], (n, 1)), np.ones(n, np.float32),
                       np.ones(n, bool), np.zeros((n, 4), np.float32), 10.0, 0.4, "m1")
    with store.writing(), pytest.raises(StoreError, match=f"at most {MAX_SLOTS} per file"):
        store.apply([(big, "hash-big")])
    assert store.info().files == 5 and store.check() == []


def test_max_slots_is_kept_in_meta_and_counted_once_for_an_older_store(store, tmp_path, basis):
    assert store.max_slots() == 3 and store.meta("max_slots") == "3"  # a.wav: two speakers and an inactive slot
    with store.writing():
        store.apply([(make_set(tmp_path / "f.wav", [0, 1, 2, 3], basis), "hash-f")])
    assert store.max_slots() == 5
    with store.writing():
        store.apply([], [tmp_path / "f.wav"])
    assert store.max_slots() == 5  # kept: a search a little deeper, never too shallow
    store.db.execute("DELETE FROM meta WHERE key = 'max_slots'")  # as a store made before it was kept
    assert store.max_slots() == 3  # counted
    with store.writing():
        store.apply([(make_set(tmp_path / "g.wav", [2], basis), "hash-g")])
    assert store.meta("max_slots") == "3"


def test_spans_are_runs_above_threshold_long_enough():
    from weighter.embedding_set import spans

    w = np.array([0.9, 0.9, 0.1, 0.6, 0.2, 0.7, 0.7, 0.7, 0.7, 0.8])  # 10 Hz
    assert spans(w, 10.0, 0.95, min_seconds=0.2) == [(0.0, 0.2), (0.5, 0.95)]  # the last run ends at the duration
    assert spans(w, 10.0, 1.0, min_seconds=0.1) == [(0.0, 0.2), (0.3, 0.4), (0.5, 1.0)]
    assert spans(np.zeros(5), 10.0, 0.5) == []


def test_other_model_is_refused(store, tmp_path, basis):
    with store.writing(), pytest.raises(StoreError, match="holds embeddings of model m1, not m2"):
        store.apply([(make_set(tmp_path / "x.wav", [0], basis, model_id="m2"), "h")])


@pytest.mark.parametrize("factory", [None, "IVF2,SQ8"])  # exact scores; 8-bit codes re-scored from SQLite
def test_query_many_ranks_each_query_as_query_store_does(store, tmp_path, basis, factory):
    from weighter.index import query_many

    if factory:
        with store.writing():
            store.apply([], index_type=factory)
    queries = [make_set(tmp_path / "new.wav", [1, 3], basis, seed=9),  # a new file, two speakers
               store.embedding_set(store.file_id(tmp_path / "a.wav")),  # a stored one: leaves itself out
               make_set(tmp_path / "quiet.wav", [], basis, seed=3)]  # no active slot: its most confident
    rankings = query_many(store, queries, k=3)
    assert rankings == [query_store(store, q, k=3) for q in queries]
    assert "a.wav" not in {os.path.basename(m.file) for m in rankings[1]} and len(rankings[0]) == 3
    assert query_many(store, [], k=3) == []


@pytest.mark.parametrize("factory", ["HNSW32,Flat", "IVF2,Flat", "IVF2,SQfp16", "IVF2,SQ8"])
def test_index_type_override(store, tmp_path, basis, factory):
    q = make_set(tmp_path / "q.wav", [3], basis)
    exact = {m.file: m.score for m in query_store(store, q, k=10)}  # Flat: every file, exact scores
    with store.writing():
        store.apply([], index_type=factory)
    assert store.info().index_type == factory and store.check() == []
    assert store.exact_scores() == (factory != "IVF2,SQ8")  # float16 counts as exact, 8-bit codes are re-scored
    found = query_store(store, q, k=3)
    assert os.path.basename(found[0].file) == "c.wav"
    assert abs(found[0].score - exact[found[0].file]) < 1e-3  # the strong match: its best slot pair is found
    # an approximate search may miss a weak file's best slot pair, never invent a better one;
    # 8-bit codes are re-scored from SQLite over all slot pairs: exact
    assert all(m.score <= exact[m.file] + 1e-3 for m in found)
    if factory == "IVF2,SQ8":
        assert all(abs(m.score - exact[m.file]) < 1e-4 for m in found)


def test_removal_from_an_ivf_index_keeps_its_training(store, tmp_path, basis):
    """Removing files from an IVF store drops their vectors in place: the trained centroids stay
    (a rebuild would retrain them: ~1 min at 1M vectors) and FAISS still agrees with SQLite."""
    import faiss

    with store.writing():
        store.apply([(make_set(tmp_path / f"x{i}.wav", [i % 6], basis, seed=20 + i), f"hx{i}") for i in range(40)],
                    index_type="IVF4,Flat")

    def centroids():
        ivf = faiss.extract_index_ivf(store._load_index())
        return faiss.rev_swig_ptr(faiss.downcast_index(ivf.quantizer).get_xb(), ivf.nlist * DIM).copy()

    before, generation = centroids(), store.generation
    with store.writing():
        store.apply([], [tmp_path / "c.wav", tmp_path / "x3.wav"])
    assert store.generation == generation + 1 and store.check() == []
    np.testing.assert_array_equal(centroids(), before)
    q = make_set(tmp_path / "q.wav", [3], basis)
    assert all(os.path.basename(m.file) not in ("c.wav", "x3.wav") for m in query_store(store, q, k=50))


def test_many_ivf_lists_are_trained_in_two_levels_and_still_find_neighbours(tmp_path, monkeypatch):
    """From TWO_LEVEL_FROM lists the coarse k-means runs in two levels (10x faster at 1M; 41.6k
    slots leave 39 per list for training after the tuning slots):
    the index must hold those centroids, untouched by FAISS's own training, and search well."""
    import faiss
    from faiss.contrib import clustering

    calls = []
    real = clustering.two_level_clustering
    monkeypatch.setattr(clustering, "two_level_clustering", lambda *a, **k: calls.append(real(*a, **k)) or calls[-1])
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(500, DIM))
    x = centres[rng.integers(0, 500, 41_600)] + rng.normal(0, 0.3, (41_600, DIM))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    s = _vector_store(tmp_path / "big", x, f"IVF{TWO_LEVEL_FROM},Flat")
    assert len(calls) == 1
    ivf = faiss.extract_index_ivf(s._load_index())
    stored = faiss.rev_swig_ptr(faiss.downcast_index(ivf.quantizer).get_xb(), ivf.nlist * DIM).reshape(ivf.nlist, DIM)
    np.testing.assert_array_equal(stored, calls[0][0])
    queries = x[rng.permutation(len(x))[:50]] + rng.normal(0, 0.05, (50, DIM)).astype(np.float32)
    exact = faiss.IndexFlatIP(DIM)
    exact.add(x)
    _, truth = exact.search(queries, 10)
    rows = _rows(s.search(queries, 10)[1])
    assert np.mean([len(set(rows[i]) & set(truth[i])) / 10 for i in range(50)]) >= 0.9


def _own_slot_recall(store, x, sample) -> float:
    """Recall@10 of the store's search for some of its own slots against exact search, each
    slot's own vector left out (row i of x is file i // 8's slot i % 8)."""
    import faiss

    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x)
    _, truth = exact.search(x[sample], 11)
    rows = _rows(store.search(x[sample], 11)[1])
    return float(np.mean([len(set(rows[i][rows[i] != q][:10]) & set(truth[i][truth[i] != q][:10])) / 10
                          for i, q in enumerate(sample)]))


def _rows(found: np.ndarray) -> np.ndarray:
    """Slot ids found -> rows of the vectors of a _vector_store (file ids start at 1)."""
    return (found >> SLOT_BITS) * 8 + (found & (MAX_SLOTS - 1)) - 8


def _vector_sets(x, files, prefix="f") -> list:
    """Embedding sets (with hashes) of files made of 8 active rows of x each: file f holds rows 8f..8f+7."""
    return [(EmbeddingSet(f"/{prefix}{f}.wav", x[f * 8:(f + 1) * 8], np.ones(8, np.float32), np.ones(8, bool),
                          np.zeros((8, 4), np.float32), 10.0, 0.4, "m1"), f"{prefix}{f}") for f in files]


def _vector_store(path, x, factory):
    s = Store(path, create=True)
    with s.writing():
        s.apply(_vector_sets(x, range(len(x) // 8)), index_type=factory)
    return s


def test_ivf_nprobe_is_tuned_on_the_store_own_slots(tmp_path):
    """Clustered slots (speakers) need few probes, structureless ones many; either way the tuned
    nprobe, kept in the FAISS file and in meta, reaches the recall target on other own slots."""
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(60, DIM))
    clustered = centres[rng.integers(0, 60, 4000)] + rng.normal(0, 0.1, (4000, DIM))
    scattered = rng.normal(size=(4000, DIM))
    tuned = {}
    for name, x in (("clustered", clustered), ("scattered", scattered)):
        x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
        _vector_store(tmp_path / name, x, "IVF64,Flat").close()
        s = Store(tmp_path / name)  # reopened: the nprobe comes back from the FAISS file
        tuned[name] = faiss_nprobe(s)
        assert s.info().nprobe == tuned[name]
        assert _own_slot_recall(s, x, rng.choice(len(x), 200, replace=False)) >= IVF_RECALL
    assert MIN_NPROBE <= tuned["clustered"] < tuned["scattered"] <= 64


def test_a_build_reads_the_slots_a_chunk_at_a_time_and_gets_the_same_index(tmp_path, monkeypatch):
    """A new base (training sample, filling, nprobe tuning, every slot's statistics) streams
    the active slots from SQLite in chunks: read 37 rows at a time, it makes the index, nprobe
    and scores that reading them all at once makes."""
    from weighter.index import faiss_index
    from weighter.scoring import Cohort

    rng = np.random.default_rng(8)
    centres = rng.normal(size=(40, DIM))
    x = centres[rng.integers(0, 40, 3000)] + rng.normal(0, 0.1, (3000, DIM))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    cohort = Cohort(x[rng.choice(3000, 100, replace=False)], 0.2)
    largest = []
    read_rows = faiss_index.SlotSource.chunks

    def spy(source):
        for start, vectors in read_rows(source):
            largest.append(len(vectors))
            yield start, vectors

    stores = {}
    for name, chunk in (("whole", 10**9), ("chunked", 37)):
        monkeypatch.setattr(faiss_index, "SOURCE_CHUNK", chunk)
        monkeypatch.setattr(faiss_index.SlotSource, "chunks", spy)
        largest.clear()
        s = Store(tmp_path / name, create=True)
        with s.writing():
            s.apply(_vector_sets(x, range(len(x) // 8)), index_type="IVF16,Flat", score_cohort=cohort)
            s.repair()  # the statistics too are recomputed from SQLite
        stores[name] = (s, max(largest))
    (whole, most_whole), (chunked, most_chunked) = stores["whole"], stores["chunked"]
    assert most_whole == len(x) and most_chunked == 37
    assert faiss_nprobe(whole) == faiss_nprobe(chunked)
    queries = x[rng.choice(3000, 50, replace=False)]
    assert np.array_equal(whole.search(queries, 10)[1], chunked.search(queries, 10)[1])
    assert np.allclose(whole._load_stats()["mean"], chunked._load_stats()["mean"])
    assert np.array_equal(whole._load_stats()["ids"], chunked._load_stats()["ids"])
    assert whole.check() == [] and chunked.check() == []


def test_an_ivf_index_updated_in_place_is_tuned_again_only_once_it_grew(tmp_path):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(5600, DIM))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    s = _vector_store(tmp_path / "s", x[:4000], "IVF64,Flat")

    def add(files):
        with s.writing():
            s.apply(_vector_sets(x, files, prefix="g"))

    generation = s.generation
    add(range(500, 520))  # 4160 vectors: within RETUNE_DRIFT of 4000
    assert s.meta("nprobe_tuned_at") == "4000" and s.generation == generation + 1
    add(range(520, 700))  # 5600: past it
    assert s.meta("nprobe_tuned_at") == "5600"
    assert int(s.meta("nprobe")) == faiss_nprobe(s)
    assert s.check() == []
    s.set_meta("nprobe", str(faiss_nprobe(s) + 1))  # meta out of step with the FAISS file
    assert any("meta records nprobe" in p for p in s.check())


def faiss_nprobe(store) -> int:
    import faiss

    return faiss.extract_index_ivf(store._load_index()).nprobe


def test_exact_top_matches_brute_force():
    rng = np.random.default_rng(6)
    x, q = rng.normal(size=(1000, DIM)).astype(np.float32), rng.normal(size=(7, DIM)).astype(np.float32)
    top = _exact_top(q, x, 5, chunk=128)  # merged across 8 chunks
    assert [set(row) for row in top] == [set(row) for row in np.argsort(-(q @ x.T), axis=1)[:, :5]]


def test_automatic_index_type_by_size():
    assert auto_factory(1000) == auto_factory(EXACT_LIMIT) == "Flat"
    assert auto_factory(EXACT_LIMIT + 1) == "IVF1024,SQfp16"  # 4 sqrt(n) = 1265, the nearest power of two
    assert auto_factory(1_000_000) == "IVF4096,SQfp16"


def test_past_its_memory_a_store_quantises_its_vectors_and_rescores_exactly(tmp_path, basis, monkeypatch):
    """Float16 vectors that would pass the store's index memory make an 8-bit IVF index (half
    the size); queries re-score their best candidate files from SQLite, so the scores they
    return are those of an exact store."""
    from weighter.index import faiss_index

    monkeypatch.setattr(faiss_index, "EXACT_LIMIT", 1000)
    rng = np.random.default_rng(9)
    sets = [(make_set(tmp_path / f"f{i}.wav", list(rng.choice(DIM, 2, replace=False)), basis, seed=i), f"h{i}")
            for i in range(1500)]
    small = Store(tmp_path / "small", create=True)
    small.index_memory = 64 << 10  # 64 KiB: 3000 float16 vectors of 16 with their ids (120 KiB) do not fit
    exact = Store(tmp_path / "exact", create=True)
    for store, factory in ((small, None), (exact, "Flat")):
        with store.writing():
            store.apply(sets, index_type=factory)
    assert small.info().index_type == "IVF256,SQ8" and not small.exact_scores()
    assert faiss_index.auto_factory(3000, DIM, 1 << 20) == "IVF256,SQfp16"  # 1 MiB would have held them
    for i in range(0, 1500, 100):
        query = make_set(tmp_path / "q.wav", [int(i % DIM)], basis, seed=5000 + i)
        found = {m.file: m.score for m in query_store(small, query, k=5)}
        ranked = query_store(exact, query, k=len(sets))
        truth = {m.file: m.score for m in ranked}
        assert len(found) == 5 and all(abs(score - truth[f]) < 1e-4 for f, score in found.items())  # exact scores
        # near ties abound (each voice is in ~190 files): the found files are among the best 75
        assert set(found) <= {m.file for m in ranked[:75]}
    assert small.check() == []
    ids, vectors = small.active_vectors()  # SQLite's embeddings shuffled: the codes no longer match them
    small.db.executemany("UPDATE slots SET embedding = ? WHERE id = ?",
                         [(v.tobytes(), int(i)) for i, v in zip(ids, np.roll(vectors, 7, axis=0))])
    assert "FAISS vectors differ from SQLite's embeddings" in small.check()


def _python(code: str, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


CHILD_PRELUDE = """
    import os, signal, sys, time
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_index import make_set, DIM
    from weighter.index import Store
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(DIM, DIM)))
    basis = q.astype(np.float32)
    store = Store({store!r})
"""


def test_kill_9_between_faiss_write_and_commit_keeps_old_state(store, tmp_path):
    before = store.info()
    child = _python(CHILD_PRELUDE.format(tests=os.path.dirname(__file__), store=str(store.directory)) + """
    with store.writing():
        store.apply([(make_set("/x/new.wav", [9], basis), "h")],
                    after_faiss_written=lambda: os.kill(os.getpid(), signal.SIGKILL))
    """, tmp_path)
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    reopened = Store(store.directory)
    assert reopened.info().files == before.files and reopened.generation == before.generation
    assert reopened.check() == []
    assert len(list(store.directory.glob("vectors-*.faiss"))) == 2  # the orphan of the killed write
    with reopened.writing():
        pass
    assert len(list(store.directory.glob("vectors-*.faiss"))) == 1  # removed by the next writer



def test_second_writer_is_refused_while_readers_go_on(store, tmp_path, basis):
    child = _python(CHILD_PRELUDE.format(tests=os.path.dirname(__file__), store=str(store.directory)) + """
    with store.writing():
        print("locked", flush=True)
        time.sleep(30)
    """, tmp_path)
    try:
        assert child.stdout.readline().strip() == "locked"
        other = Store(store.directory)
        with pytest.raises(StoreError, match=r"being written by pid [0-9]+"):
            with other.writing():
                pass
        q = make_set(tmp_path / "q.wav", [3], basis)
        assert os.path.basename(query_store(other, q, k=1)[0].file) == "c.wav"  # reading works
        assert other.check() == []
    finally:
        child.kill()
        child.wait()
    with Store(store.directory).writing():  # a killed writer's lock is released by the kernel
        pass


def test_corrupt_files_get_clear_errors_and_repair(store, tmp_path):
    faiss_file = store.directory / store.info().faiss_file
    faiss_file.write_bytes(b"garbage")
    fresh = Store(store.directory)
    problems = fresh.check()
    assert problems and "corrupt FAISS index" in problems[0]
    with fresh.writing():
        fresh.repair()
    assert Store(store.directory).check() == []
    # a readable FAISS file that disagrees with SQLite (a vector missing) is rebuilt too
    import faiss

    index = faiss.read_index(str(faiss_file.parent / Store(store.directory).info().faiss_file))
    index.remove_ids(np.array([int(faiss.vector_to_array(index.id_map)[0])], dtype=np.int64))
    faiss.write_index(index, str(faiss_file.parent / Store(store.directory).info().faiss_file))
    assert Store(store.directory).check()
    fresh = Store(store.directory)
    with fresh.writing():
        fresh.repair()
    assert Store(store.directory).check() == []
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "store.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="corrupt or not an SQLite store"):
        Store(bad)
    with pytest.raises(StoreError, match="not a weighter store"):
        Store(tmp_path / "nowhere")


def test_cli_build_add_query_remove_with_a_killed_writer(trained_model, tiny_bank, tmp_path):
    from weighter.corpus import MixerConfig, write_corpus

    model, _ = trained_model
    write_corpus(tiny_bank, tmp_path / "c", "heldout", 4, MixerConfig(1, 2, 5, 8), progress=False)
    runner = CliRunner()
    store = tmp_path / "s"
    audio = tmp_path / "c" / "audio"
    r = runner.invoke(main, ["index", "build", str(audio), "--store", str(store), "--model", str(model), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["added"] == 4
    r = runner.invoke(main, ["index", "add", str(audio), "--store", str(store), "--model", str(model), "--json"])
    assert json.loads(r.stdout)["unchanged"] == 4 and json.loads(r.stdout)["added"] == 0
    first = sorted(audio.glob("*.flac"))[0]
    r = runner.invoke(main, ["query", str(first), "--store", str(store), "--json", "-k", "2"])
    result = json.loads(r.stdout)
    assert r.exit_code == 0 and len(result["results"]) == 2
    assert {"file", "score", "cosine", "probability", "query_slot", "stored_slot", "query_spans",
            "stored_spans"} <= set(result["results"][0])
    # a real process killed with SIGKILL in the middle of adding: nothing stored is lost
    extra = tmp_path / "more"
    extra.mkdir()
    for i in range(30):
        data, rate = sf.read(str(first))
        sf.write(str(extra / f"x{i}.wav"), np.roll(data, 1000 * (i + 1)), rate)
    child = subprocess.Popen([sys.executable, "-m", "weighter.cli", "index", "add", str(extra), "--store", str(store),
                              "--model", str(model)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(4)
    child.send_signal(signal.SIGKILL)
    child.wait()
    reopened = Store(store)
    assert reopened.check() == [] and reopened.info().files >= 4
    r = runner.invoke(main, ["index", "info", "--store", str(store), "--check"])
    assert r.exit_code == 0 and "problems: []" in r.output
    r = runner.invoke(main, ["index", "remove", str(first), "--store", str(store)])
    assert r.exit_code == 0 and Store(store).file_id(first) is None


def test_store_is_a_context_manager_that_closes_on_exit(tmp_path, basis):
    import sqlite3

    with Store(tmp_path / "cm", create=True) as s:
        with s.writing():
            s.apply([(make_set(tmp_path / "a.wav", [0], basis), "hash-a")])
        assert s.info().files == 1
    with pytest.raises(sqlite3.ProgrammingError):  # closed
        s.db.execute("SELECT 1")
    with pytest.raises(RuntimeError), Store(tmp_path / "cm") as again:  # closed on an error too
        raise RuntimeError
    with pytest.raises(sqlite3.ProgrammingError):
        again.db.execute("SELECT 1")
    assert Store(tmp_path / "cm").info().files == 1


class _FakeEmbedder:
    """What add_files needs of an Embedder, without a model: each path gets make_set's set."""

    model_id, speech_gate, score_cohort = "m1", None, None
    metadata = ModelMetadata(model_id="m1", config={}, likes=[], merge_cosine=0.8, pair_calibration=[14.0, -13.0])

    def __init__(self, basis):
        self.basis, self.seen = basis, []

    def embed(self, inputs, progress=False, errors=None):
        inputs = list(inputs)
        self.seen += inputs
        return [make_set(p, [i % DIM], self.basis, seed=i) for i, p in enumerate(inputs)]


def test_add_files_takes_plain_paths_and_audio_sources(tmp_path, basis):
    from weighter.audio import AudioSource
    from weighter.index import add_files

    for name in ("a.wav", "b.wav", "c.wav"):
        (tmp_path / name).write_bytes(name.encode())
    embedder = _FakeEmbedder(basis)
    with Store(tmp_path / "s", create=True) as s:
        result = add_files(s, embedder, [str(tmp_path / "a.wav"), tmp_path / "b.wav",
                                         AudioSource(tmp_path / "c.wav")])
        assert result.added == 3 and result.store.files == 3
        assert s.meta("merge_cosine") == "0.8" and s.meta("pair_calibration") == "[14.0, -13.0]"  # for clustering, p
        assert all(s.file_id(tmp_path / n) is not None for n in ("a.wav", "b.wav", "c.wav"))
        again = add_files(s, embedder, (str(tmp_path / n) for n in ("a.wav", "b.wav")))  # any iterable
        assert again.added == 0 and again.unchanged == 2


def test_errors_name_parameters_and_the_cli_adds_its_flags(store, tmp_path):
    stored = store.embedding_set(store.file_id(tmp_path / "a.wav"))  # 3 slots
    with pytest.raises(ValueError, match=r"^slot 7: the query has slots 0 to 2$"):
        query_store(store, stored, slot=7)
    r = CliRunner().invoke(main, ["query", str(tmp_path / "a.wav"), "--store", str(store.directory), "--slot", "7"])
    assert r.exit_code == 2 and "Invalid value for '--slot': slot 7: the query has slots 0 to 2" in r.output
    (store.directory / store.info().faiss_file).unlink()
    with pytest.raises(StoreError, match="rebuild it from SQLite with Store.repair") as error:
        Store(store.directory).search(stored.embeddings, 1)
    assert "--" not in str(error.value)
    r = CliRunner().invoke(main, ["query", str(tmp_path / "a.wav"), "--store", str(store.directory)])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1
    assert f"on the command line: `weighter index info --store {store.directory} --check --repair`" in r.output


def test_a_query_runs_its_products_and_search_on_one_thread(tmp_path, basis, monkeypatch):
    # several BLAS / OpenMP threads wait on each other when another process holds a core:
    # index_speed.py --busy 1 measured a p99 ten times the quiet one; one thread per query avoids it
    from threadpoolctl import threadpool_info

    import weighter.index.query as query_module
    from weighter.scoring import Cohort

    cohort = np.random.default_rng(4).normal(size=(100, DIM)).astype(np.float32)
    store = Store(tmp_path / "store", create=True)
    with store.writing():  # with a score cohort: the query slots' statistics are computed beside the search
        store.apply([(make_set(tmp_path / f"{f}.wav", [f, f + 1], basis, seed=f), f"hash-{f}") for f in range(4)],
                    score_cohort=Cohort(cohort / np.linalg.norm(cohort, axis=1, keepdims=True)))

    seen, beside = [], []
    search, stats = Store.search, query_module.cohort_stats

    def spy(self, vectors, k):
        seen.append({pool["internal_api"]: pool["num_threads"] for pool in threadpool_info()})
        return search(self, vectors, k)

    def stats_spy(vectors, cohort):  # on the thread beside the search: its BLAS products
        beside.append([pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"])
        return stats(vectors, cohort)

    monkeypatch.setattr(Store, "search", spy)
    monkeypatch.setattr(query_module, "cohort_stats", stats_spy)
    query = make_set(tmp_path / "q.flac", [0, 1], basis, seed=9)
    assert query_store(store, query, k=3)
    assert seen and all(threads == 1 for threads in seen[0].values())
    assert beside and beside[0] and all(threads == 1 for threads in beside[0])
    assert any(pool["num_threads"] > 1 for pool in threadpool_info()) or os.cpu_count() == 1  # restored after


def test_concurrent_queries_on_a_read_only_store_agree(store, tmp_path, basis):
    # a server's threads query one read-only Store at once (one SQLite connection per thread)
    from concurrent.futures import ThreadPoolExecutor

    query = make_set(tmp_path / "q.flac", [0, 1], basis, seed=9)
    expected = query_store(store, query, k=3)
    reader = Store(store.directory, read_only=True)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: query_store(reader, query, k=3), range(200)))
    assert len(expected) == 3 and all(r == expected for r in results)
