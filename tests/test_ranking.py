"""The query's compiled hot loops (weighter/_ranking.c) give what their numpy references give."""

import multiprocessing

import numpy as np
import pytest

from weighter import scoring
from weighter.embedding_set import spans
from weighter.index import Store, query_store
from weighter.index.query import best_pairs, file_hits
from weighter.index.store import SLOT_BITS
from weighter.scoring import Cohort, top_stats

from test_scoring import one_set, unit

DIM = 32


def test_the_extension_is_built():
    # `make test` installs with a C compiler: a missing module would mean slower queries unseen
    assert scoring._ranking is not None


@pytest.mark.parametrize("rows, columns, top", [(8, 1000, 200), (3, 50, 1), (5, 40, 40), (1, 7, 3)])
def test_top_stats_equal_numpys(rows, columns, top):
    rng = np.random.default_rng(columns)
    cosines = rng.uniform(-1, 1, (rows, columns)).astype(np.float32)
    cosines[0, : columns // 2] = 0.25  # ties across the cut
    mean, spread = top_stats(cosines.copy(), top)
    want_mean, want_spread = top_stats(cosines.copy(), top, compiled=False)
    assert np.allclose(mean, want_mean, atol=1e-6) and np.allclose(spread, want_spread, atol=1e-6)
    assert spread.min() >= scoring.MIN_SPREAD


def test_top_stats_floor_a_constant_row():
    mean, spread = top_stats(np.full((2, 30), 0.5, np.float32), 6)
    assert mean.tolist() == [0.5, 0.5] and spread.tolist() == pytest.approx([scoring.MIN_SPREAD] * 2)


def small_store(tmp_path, cohort: bool, files: int = 40, slots: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    voices = unit(rng.normal(size=(12, DIM)))
    sets = []
    for f in range(files):  # each file: a few of the 12 voices, heard afresh
        rows = unit(voices[rng.choice(12, slots, replace=False)] + 0.4 * unit(rng.normal(size=(slots, DIM))))
        sets.append((one_set(tmp_path / f"f{f:03d}.wav", rows), f"hash-{f}"))
    store = Store(tmp_path / "store", create=True)
    with store.writing():
        store.apply(sets, score_cohort=Cohort(unit(rng.normal(size=(100, DIM)))) if cohort else None)
    return store, voices


@pytest.mark.parametrize("cohort", [True, False])
def test_file_hits_equal_numpys(tmp_path, cohort):
    store, voices = small_store(tmp_path, cohort)
    rng = np.random.default_rng(5)
    for trial in range(20):
        query = unit(voices[rng.choice(12, 4, replace=False)] + 0.4 * unit(rng.normal(size=(4, DIM))))
        cosines, ids = store.search(query, 30)
        if trial % 3 == 0:  # FAISS's padding where it found fewer
            cosines[:, -5:], ids[:, -5:] = -3.4e38, -1
        if trial % 4 == 1:  # an id past the statistics table: mean 0, spread 1
            ids[0, 0] = Store.slot_id(10_000, 1)
        stats = store.query_stats(query)
        exclude = int(ids[1, 0] >> SLOT_BITS) if trial % 2 else None
        for want in (1, 5, 200, 10**12):  # a huge k allocates nothing more
            got = file_hits(store, cosines, ids, stats, exclude, want)
            assert got == file_hits(store, cosines, ids, stats, exclude, want, compiled=False)
        assert exclude not in [hit[0] for hit in got] and len({hit[0] for hit in got}) == len(got)


def test_file_hits_break_ties_as_numpy_does(tmp_path):
    store, _ = small_store(tmp_path, cohort=False)
    ids = np.array([[Store.slot_id(7, 0), Store.slot_id(3, 1), Store.slot_id(3, 2), Store.slot_id(9, 0)]])
    cosines = np.array([[0.5, 0.5, 0.5, 0.9]], np.float32)
    got = file_hits(store, cosines, ids, None, None, 10)
    assert got == file_hits(store, cosines, ids, None, None, 10, compiled=False)
    assert [(f, s) for f, _, _, _, s in got] == [(9, 0), (3, 1), (7, 0)]  # equal scores: lower file id first


def test_spans_equal_numpys():
    rng = np.random.default_rng(1)
    for trial in range(200):
        weighting = rng.uniform(0, 1, rng.integers(0, 60)).astype(np.float32)
        if trial % 5 == 0:
            weighting[:] = 0.9  # one run over the whole timeline
        rate, duration = float(rng.choice([1.0, 3.0, 10.0, 12.5])), float(rng.uniform(0.5, 8))
        threshold, least = float(rng.choice([0.3, 0.5, 0.7])), float(rng.choice([0.0, 0.2, 0.5]))
        assert spans(weighting, rate, duration, threshold, least) == \
            spans(weighting, rate, duration, threshold, least, compiled=False)


def test_spans_of_float16_weightings_equal_numpys():
    every_half = np.arange(1 << 16, dtype=np.uint16).view(np.float16)  # zeros, subnormals, normals, inf, NaN
    for threshold in (0.5, 0.3, -2.0, 3e-8, 1e-5, 70000.0):  # 0.3 is no float16; 3e-8 sits among the subnormals
        assert spans(every_half, 1.0, 1e5, threshold, 0.0) == spans(every_half, 1.0, 1e5, threshold, 0.0, compiled=False)
    rng = np.random.default_rng(2)
    for trial in range(100):
        weighting = rng.uniform(0, 1, rng.integers(0, 400)).astype(np.float16)
        threshold = float(rng.choice([0.3, 0.5, 0.7]))
        assert spans(weighting, 10.0, 40.0, threshold, 0.5) == spans(weighting, 10.0, 40.0, threshold, 0.5, compiled=False)
        assert spans(weighting, 10.0, 40.0, threshold, 0.5) == \
            spans(weighting.astype(np.float32), 10.0, 40.0, threshold, 0.5)  # the same runs as float32


def test_span_ends_round_as_python_does():
    # rates 8 and 40 put starts and ends on exact ties (0.125 s, 0.025 s); 0.001 Hz past 186 hours
    rng = np.random.default_rng(3)
    for rate in (8.0, 40.0, 3.0, 7.3, 12.5, 0.001, 1e-5):
        weighting = (rng.uniform(0, 1, 3000) > 0.5).astype(np.float32)
        duration = 3000 / rate
        assert spans(weighting, rate, duration, 0.5, 0.0) == spans(weighting, rate, duration, 0.5, 0.0, compiled=False)


def _best_pairs_loop(file_of, slot_of, scores, sims):
    """The re-scoring's first form, one column at a time: what best_pairs must return."""
    out = {}
    for col in range(len(file_of)):
        q = int(np.argmax(scores[:, col]))
        f = int(file_of[col])
        if f not in out or scores[q, col] > out[f][0]:
            out[f] = (float(scores[q, col]), float(sims[q, col]), q, int(slot_of[col]))
    return sorted(((f, *best) for f, best in out.items()), key=lambda hit: -hit[1])


def test_best_pairs_equal_the_column_loop():
    rng = np.random.default_rng(4)
    for trial in range(200):
        columns, rows = int(rng.integers(0, 40)), int(rng.integers(1, 9))
        file_of = rng.integers(1, 12, columns)
        slot_of = rng.integers(0, 8, columns)
        scores = rng.normal(size=(rows, columns)).astype(np.float32)
        if trial % 2:  # coarse values: ties within a column, within a file and between files
            scores = np.round(scores * 2) / 2
        sims = rng.uniform(-1, 1, (rows, columns)).astype(np.float32)
        assert best_pairs(file_of, slot_of, scores, sims) == _best_pairs_loop(file_of, slot_of, scores, sims)


def _query_in_child(directory, path, out):
    with Store(directory, read_only=True) as store:
        query = store.embedding_set(store.file_id(path))
        out.put([m.file for m in query_store(store, query, k=5)])


def test_a_forked_process_queries_after_its_parent(tmp_path):
    # queries compute cohort statistics on a thread beside FAISS: a forked child needs its own
    store, _ = small_store(tmp_path, cohort=True)
    query = store.embedding_set(store.file_id(tmp_path / "f000.wav"))
    parent = [m.file for m in query_store(store, query, k=5)]
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    child = context.Process(target=_query_in_child, args=(store.directory, str(tmp_path / "f000.wav"), out), daemon=True)
    child.start()
    child.join(60)
    if child.is_alive():  # hung: its thread pool thought the parent's thread was its own
        child.kill()
    assert child.exitcode == 0 and out.get(timeout=5) == parent


def test_a_query_never_waits_for_the_thread_beside_its_search(tmp_path, monkeypatch):
    # another process may hold the core of the thread that computes the query's cohort
    # statistics: a query whose search ends first computes them itself
    import threading

    import weighter.index.query as query_module

    store, _ = small_store(tmp_path, cohort=True)
    query = store.embedding_set(store.file_id(tmp_path / "f000.wav"))
    expected = query_store(store, query, k=5)
    release, waited, real = threading.Event(), [], query_module._stats_beside

    def held(vectors, cohort):
        waited.append(not release.wait(20))  # True: nobody released it, so the query waited 20 s
        return real(vectors, cohort)

    monkeypatch.setattr(query_module, "_stats_beside", held)
    got = query_store(store, query, k=5)
    waited_then = list(waited)
    release.set()
    assert waited_then == [] and got == expected


def test_file_hits_without_a_statistics_table_equal_those_with_one(tmp_path, monkeypatch):
    # ids too sparse for a (file, slot) table (files removed and added many times): the
    # statistics come from a search of the sorted ids and the ranking is numpy's
    import weighter.index.score_stats as score_stats

    store, voices = small_store(tmp_path, cohort=True)
    query = unit(voices[:3] + 0.4 * unit(np.random.default_rng(8).normal(size=(3, DIM))))
    cosines, ids = store.search(query, 30)
    stats = store.query_stats(query)
    with_table = file_hits(store, cosines, ids, stats, None, 10)
    monkeypatch.setattr(score_stats, "DENSE_LIMIT", 0)
    store._load_stats().pop("table")  # made by the first ranking: make it again, now refused
    assert store.stats_table() is None
    assert file_hits(store, cosines, ids, stats, None, 10) == with_table
