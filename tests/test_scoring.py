"""Cohort score normalisation: the figures (weighter.evaluation) and the store's queries score alike."""

import os

import numpy as np
import pytest

from weighter.evaluation import SetTruth, file_scores, retrieval_map
from weighter.index import Store, StoreError, query_store
from weighter.index.store import SLOT_BITS
from weighter.scoring import COHORT_SIZE, MIN_COHORT, cohort_stats, draw_cohort, normalised

DIM = 64


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def hub_corpus(seed=0):
    """A "hub" family of voices that all sit close to each other (cosine ~0.75, like variants
    of one synthesiser) and a quiet voice whose true matches score only ~0.6, plus unrelated
    one-voice files for the cohort. Returns (embedding rows per file, likes per file)."""
    rng = np.random.default_rng(seed)
    hub_centre = unit(rng.normal(size=DIM))
    family = unit(hub_centre + 0.6 * unit(rng.normal(size=(6, DIM))))  # hub-0 .. hub-5, alike
    quiet = unit(rng.normal(size=DIM))
    quiet_take = lambda: unit(quiet + 0.8 * unit(rng.normal(size=DIM)))  # noisy takes: cosine ~0.6 to each other
    files = [([family[0], quiet_take()], ("hub-0", "quiet"))]  # the query
    files += [([quiet_take()], ("quiet",)) for _ in range(2)]  # its true matches through the quiet voice
    files += [([unit(family[h] + 0.05 * rng.normal(size=DIM))], (f"hub-{h}",)) for h in range(1, 6)
              for _ in range(3)]  # strangers that sound like the query's hub voice
    files += [([unit(rng.normal(size=DIM))], (f"other-{i}",)) for i in range(20)]
    return files


def items_of(files):
    return [SetTruth(np.stack(rows), np.ones(len(rows), np.float32), np.zeros((len(rows), 4), np.float32), likes)
            for rows, likes in files]


def test_normalisation_ranks_a_quiet_voices_match_above_a_hubs_strangers():
    items = items_of(hub_corpus())
    raw, _ = file_scores(items, 0.5, normalise=False)
    norm, _ = file_scores(items, 0.5)
    quiet_matches, strangers = [1, 2], list(range(3, 18))
    assert raw[0, quiet_matches].min() < raw[0, strangers].max()  # raw cosine: strangers first
    assert norm[0, quiet_matches].min() > norm[0, strangers].max()  # normalised: the true matches
    assert retrieval_map(items, 0.5) > retrieval_map(items, 0.5, normalise=False)


def test_statistics_leave_out_the_own_file_and_need_a_cohort():
    rng = np.random.default_rng(0)
    cohort = unit(rng.normal(size=(40, DIM)))
    owners = np.arange(40)
    mean, spread = cohort_stats(cohort[:1], np.array([0]), cohort, owners)  # itself (cosine 1) is left out
    others = np.sort(cohort[1:] @ cohort[0])[::-1][:4]  # its best 10% of the 39 others
    assert mean[0] == pytest.approx(others.mean(), abs=1e-5) and spread[0] == pytest.approx(others.std(), abs=1e-5)
    small_mean, small_spread = cohort_stats(cohort[:3], owners[:3], cohort[: MIN_COHORT - 1], owners[: MIN_COHORT - 1])
    assert (small_mean == 0).all() and (small_spread == 1).all()
    assert normalised(np.float32(0.3), small_mean[0], small_spread[0], 0.0, 1.0) == pytest.approx(0.3)  # raw cosine
    assert len(draw_cohort(COHORT_SIZE + 5)) == COHORT_SIZE and (draw_cohort(7) == np.arange(7)).all()


def store_of(tmp_path, files, name="store"):
    store = Store(tmp_path / name, create=True)
    sets = []
    for i, (rows, _) in enumerate(files):
        emb = np.stack(rows).astype(np.float32)
        sets.append((EmbeddingSetOf(tmp_path / f"f{i:03d}.wav", emb), f"hash-{i}"))
    with store.writing():
        store.apply(sets)
    return store


def EmbeddingSetOf(path, emb):
    from weighter.embedding_set import EmbeddingSet

    n = len(emb)
    return EmbeddingSet(str(path), emb, np.ones(n, np.float32), np.ones(n, bool), np.zeros((n, 8), np.float32),
                        4.0, 2.0, "m1")


def test_store_queries_score_as_the_figures_do(tmp_path):
    files = hub_corpus()
    store = store_of(tmp_path, files)
    assert store.scoring() == "s-norm" and store.check() == []
    expected, _ = file_scores(items_of(files), 0.5)
    for q in (0, 4, 30):
        query = store.embedding_set(store.file_id(tmp_path / f"f{q:03d}.wav"))
        found = query_store(store, query, k=len(files))
        got = {int(os.path.basename(m.file)[1:4]): m.score for m in found}
        assert len(got) == len(files) - 1
        assert all(got[f] == pytest.approx(expected[q, f], abs=2e-3) for f in got)  # scores rounded to 4 digits
    top = query_store(store, store.embedding_set(store.file_id(tmp_path / "f000.wav")), k=2)
    assert {os.path.basename(m.file) for m in top} == {"f001.wav", "f002.wav"}  # the quiet voice's matches
    assert all(-1 <= m.cosine <= 1 and m.cosine < m.score for m in top)


def test_the_cohort_is_kept_while_the_store_grows_a_little_and_drawn_anew_beyond(tmp_path):
    files = hub_corpus()
    store = store_of(tmp_path, files)
    first = store._load_cohort()
    with store.writing():
        store.apply([(EmbeddingSetOf(tmp_path / "new.wav", unit(np.ones((1, DIM)))), "hash-new")])
    after = store._load_cohort()
    assert np.array_equal(after["cohort_ids"], first["cohort_ids"]) and store.check() == []
    old = np.isin(after["ids"], first["ids"])
    assert np.array_equal(after["mean"][old], first["mean"])  # the stored slots' statistics stand
    new_mean, new_spread = cohort_stats(unit(np.ones((1, DIM))), np.array([-1]), first["cohort"],
                                        first["cohort_ids"] >> SLOT_BITS)
    assert after["mean"][~old][0] == pytest.approx(new_mean[0]) and after["spread"][~old][0] == pytest.approx(new_spread[0])
    more = [(EmbeddingSetOf(tmp_path / f"more{i}.wav", unit(np.random.default_rng(i).normal(size=(1, DIM)))), f"m{i}")
            for i in range(15)]
    with store.writing():
        store.apply(more)  # 40 -> 55 active slots: more than COHORT_REDRAW times: a new cohort of all of them
    grown = store._load_cohort()
    assert grown["drawn_from"] == 55 and len(grown["cohort_ids"]) == 55 and store.check() == []
    with store.writing():
        store.apply([], remove=[tmp_path / "f000.wav"])  # its slots were in the cohort: drawn anew
    assert store._load_cohort()["drawn_from"] == 53 and store.check() == []


def test_a_missing_or_corrupt_cohort_file_is_reported_and_repaired(tmp_path):
    store = store_of(tmp_path, hub_corpus())
    path = store.directory / store._cohort_name(store.generation)
    path.unlink()
    fresh = Store(store.directory)
    assert fresh.scoring() == "cosine" and any("no cohort file" in p for p in fresh.check())
    query = fresh.embedding_set(fresh.file_id(tmp_path / "f000.wav"))
    assert query_store(fresh, query, k=1)[0].score == query_store(fresh, query, k=1)[0].cosine  # raw cosines
    with fresh.writing():
        fresh.repair()
    assert Store(store.directory).scoring() == "s-norm" and Store(store.directory).check() == []
    path = store.directory / Store(store.directory)._cohort_name(Store(store.directory).generation)
    path.write_bytes(b"garbage")
    broken = Store(store.directory)
    with pytest.raises(StoreError, match="corrupt cohort file"):
        query_store(broken, query, k=1)
    assert any("corrupt cohort file" in p for p in broken.check())
    with broken.writing():
        broken.repair()
    assert Store(store.directory).check() == []
