"""Cohort score normalisation: the figures (weighter.evaluation) and the store's queries score alike."""

import os

import numpy as np
import pytest

from weighter.evaluation import SetTruth, file_scores, retrieval_map
import weighter.index.score_stats as score_stats
from weighter.index import Store, StoreError, query_store
from weighter.embedding_set import EmbeddingSet
from weighter.scoring import (COHORT_SIZE, LEGACY_TOP_SHARE, MIN_COHORT, TOP_SHARE, Cohort, cohort_stats, draw_cohort,
                              normalised)

DIM = 64


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def hub_corpus(seed=0):
    """A "hub" family of voices that all sit close to each other (cosine ~0.75, like variants
    of one synthesiser) and a quiet voice whose true matches score only ~0.6, plus unrelated
    one-voice files. Returns (embedding rows per file, likes per file) and a cohort of
    *other* voices like those a model is trained on: some of the hub family's kind, most not."""
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
    cohort = np.concatenate([unit(hub_centre + 0.6 * unit(rng.normal(size=(10, DIM)))),
                             unit(rng.normal(size=(90, DIM)))]).astype(np.float32)
    return files, Cohort(cohort)


def items_of(files):
    return [SetTruth(np.stack(rows), np.ones(len(rows), np.float32), np.zeros((len(rows), 4), np.float32), likes)
            for rows, likes in files]


def test_normalisation_ranks_a_quiet_voices_match_above_a_hubs_strangers():
    files, cohort = hub_corpus()
    items = items_of(files)
    raw, _ = file_scores(items, 0.5)
    norm, _ = file_scores(items, 0.5, cohort=cohort)
    quiet_matches, strangers = [1, 2], list(range(3, 18))
    assert raw[0, quiet_matches].min() < raw[0, strangers].max()  # raw cosine: strangers first
    assert norm[0, quiet_matches].min() > norm[0, strangers].max()  # normalised: the true matches
    assert retrieval_map(items, 0.5, cohort) > retrieval_map(items, 0.5)


def test_a_speaker_heard_in_half_the_files_keeps_his_matches():
    """The cohort is the model's training voices, never the corpus: a speaker in many files
    (a host, an agent) does not fill his own cohort with his true matches."""
    rng = np.random.default_rng(3)
    host = unit(rng.normal(size=DIM))
    files = [([unit(host + 0.5 * unit(rng.normal(size=DIM))), unit(rng.normal(size=DIM))], ("host", f"guest-{i}"))
             for i in range(10)]
    files += [([unit(rng.normal(size=DIM))], (f"other-{i}",)) for i in range(10)]
    cohort = Cohort(unit(rng.normal(size=(100, DIM))))
    norm, shared = file_scores(items_of(files), 0.5, cohort=cohort)
    for q in range(10):
        assert set(np.argsort(-norm[q])[:9]) == set(range(10)) - {q}  # the other 9 host files first


def test_statistics_are_the_mean_and_spread_of_the_best_cosines_and_need_a_cohort():
    rng = np.random.default_rng(0)
    cohort = unit(rng.normal(size=(100, DIM)))
    v = unit(rng.normal(size=(3, DIM)))
    for share, top in ((0.05, 5), (0.2, 20)):  # the best 5% or 20% of 100
        mean, spread = cohort_stats(v, Cohort(cohort, share))
        best = np.sort(v @ cohort.T, axis=1)[:, ::-1][:, :top]
        assert np.allclose(mean, best.mean(1), atol=1e-5) and np.allclose(spread, best.std(1), atol=1e-5)
    small_mean, small_spread = cohort_stats(v, Cohort(cohort[: MIN_COHORT - 1]))
    assert (small_mean == 0).all() and (small_spread == 1).all()
    assert normalised(np.float32(0.3), small_mean[0], small_spread[0], 0.0, 1.0) == pytest.approx(0.3)  # raw cosine
    assert len(draw_cohort(COHORT_SIZE + 5)) == COHORT_SIZE and (draw_cohort(7) == np.arange(7)).all()


def one_set(path, emb):
    n = len(emb)
    return EmbeddingSet(str(path), np.asarray(emb, np.float32), np.ones(n, np.float32), np.ones(n, bool),
                        np.zeros((n, 8), np.float32), 4.0, 2.0, "m1")


def store_of(tmp_path, files, cohort, name="store"):
    store = Store(tmp_path / name, create=True)
    with store.writing():
        store.apply([(one_set(tmp_path / f"f{i:03d}.wav", np.stack(rows)), f"hash-{i}")
                     for i, (rows, _) in enumerate(files)], score_cohort=cohort)
    return store


def test_store_queries_score_as_the_figures_do(tmp_path):
    files, cohort = hub_corpus()
    store = store_of(tmp_path, files, cohort)
    assert store.scoring() == "s-norm" and store.check() == []
    expected, _ = file_scores(items_of(files), 0.5, cohort=cohort)
    for q in (0, 4, 30):
        query = store.embedding_set(store.file_id(tmp_path / f"f{q:03d}.wav"))
        found = query_store(store, query, k=len(files))
        got = {int(os.path.basename(m.file)[1:4]): m.score for m in found}
        assert len(got) == len(files) - 1
        assert all(got[f] == pytest.approx(expected[q, f], abs=2e-3) for f in got)  # scores rounded to 4 digits
    top = query_store(store, store.embedding_set(store.file_id(tmp_path / "f000.wav")), k=2)
    assert {os.path.basename(m.file) for m in top} == {"f001.wav", "f002.wav"}  # the quiet voice's matches
    assert all(-1 <= m.cosine <= 1 for m in top)


def test_statistics_follow_adds_and_removals_and_the_cohort_stays(tmp_path):
    files, cohort = hub_corpus()
    store = store_of(tmp_path, files, cohort)
    first = store._load_stats()
    new = unit(np.ones((1, DIM)))
    with store.writing():
        store.apply([(one_set(tmp_path / "new.wav", new), "hash-new")],
                    score_cohort=Cohort(cohort.vectors[::-1].copy(), 0.1))
    after = store._load_stats()
    assert np.array_equal(store.score_cohort().vectors, cohort.vectors)
    assert store.score_cohort().share == TOP_SHARE  # a store keeps the cohort and share it got first
    old = np.isin(after["ids"], first["ids"])
    assert old.sum() == len(first["ids"]) and np.array_equal(after["mean"][old], first["mean"])
    new_mean, new_spread = cohort_stats(new, cohort)
    assert after["mean"][~old][0] == pytest.approx(new_mean[0]) and after["spread"][~old][0] == pytest.approx(new_spread[0])
    with store.writing():
        store.apply([], remove=[tmp_path / "f000.wav"])
    assert len(store._load_stats()["ids"]) == len(after["ids"]) - 2 and store.check() == []


def test_slot_statistics_by_table_equal_those_by_search(tmp_path, monkeypatch):
    files, cohort = hub_corpus()
    store = store_of(tmp_path, files, cohort)
    stats = store._load_stats()
    missing = Store.slot_ids([10_000, 1], [0, 4000])  # no such file; no such slot of a stored file
    ids = np.concatenate([stats["ids"][::-1], missing])
    by_table = store.slot_stats(ids)
    assert store._stats_table(stats) is not None
    monkeypatch.setattr(score_stats, "DENSE_LIMIT", 0)  # ids too sparse for a table: sorted search
    stats.pop("table")  # the table made above is cached in the scores: make it again
    assert store._stats_table(stats) is None
    by_search = store.slot_stats(ids)
    for got, want in zip(by_table, by_search):
        assert np.array_equal(got, want)
    assert np.array_equal(by_table[0][::-1][2:], stats["mean"]) and np.array_equal(by_table[1][::-1][2:], stats["spread"])
    assert by_table[0][-2:].tolist() == [0.0, 0.0] and by_table[1][-2:].tolist() == [1.0, 1.0]
    empty = {"ids": np.zeros(0, np.int64), "mean": np.zeros(0, np.float32), "spread": np.zeros(0, np.float32)}
    monkeypatch.setattr(score_stats, "DENSE_LIMIT", 4)
    assert store._stats_table(empty) is None  # no slots: no table to index


def test_a_table_carried_over_a_delta_equals_one_made_again():
    rng = np.random.default_rng(5)

    def part(files, slots):
        ids = Store.slot_ids(np.repeat(files, slots), np.tile(np.arange(slots), len(files)))
        return ids, rng.normal(size=len(ids)).astype(np.float32), rng.uniform(0.5, 2, len(ids)).astype(np.float32)

    ids, mean, spread = part(np.arange(1, 40), 4)
    stats = {"ids": ids, "mean": mean, "spread": spread}
    score_stats.stats_table(stats, Store.owners)  # made and kept, as a query does
    deltas = [part(np.arange(40, 45), 4), part(np.arange(45, 47), 6), part(np.arange(0), 4), part(np.array([60]), 2)]
    for delta in deltas:  # new files; more slots than before; a delta of removals only; a gap of file ids
        stats = score_stats.extended(stats, *delta, Store.owners)
        carried = stats["table"]
        again = score_stats.stats_table({key: stats[key] for key in ("ids", "mean", "spread")}, Store.owners)
        assert carried.shape == again.shape and np.array_equal(carried, again)
    sparse = score_stats.extended(stats, *part(np.array([5000]), 1), Store.owners)
    assert sparse["table"] is None  # too sparse for a table: as stats_table decides
    assert score_stats.stats_table({key: sparse[key] for key in ("ids", "mean", "spread")}, Store.owners) is None


def test_a_store_without_a_cohort_scores_cosines_until_a_model_with_one_adds(tmp_path):
    files, cohort = hub_corpus()
    store = store_of(tmp_path, files[:-1], None)
    assert store.scoring() == "cosine" and store.check() == []
    query = store.embedding_set(store.file_id(tmp_path / "f000.wav"))
    assert all(m.score == m.cosine for m in query_store(store, query, k=5))
    with store.writing():
        store.apply([(one_set(tmp_path / "last.wav", np.stack(files[-1][0])), "hash-last")], score_cohort=cohort)
    assert store.scoring() == "s-norm" and store.check() == []
    assert len(store._load_stats()["ids"]) == store.info().active_slots  # everyone's statistics, not only the new


def test_a_missing_or_corrupt_scores_file_is_reported_and_repaired(tmp_path):
    files, cohort = hub_corpus()
    store = store_of(tmp_path, files, cohort)
    query = store.embedding_set(store.file_id(tmp_path / "f000.wav"))
    path = store.directory / store._stats_name(store.generation)
    path.unlink()
    fresh = Store(store.directory)
    assert "missing" in fresh.scoring() and any("missing" in p for p in fresh.check())
    with pytest.raises(StoreError, match="scores file .* is missing"):
        query_store(fresh, query, k=1)
    with fresh.writing():
        fresh.repair()
    assert Store(store.directory).scoring() == "s-norm" and Store(store.directory).check() == []
    path = store.directory / Store(store.directory)._stats_name(Store(store.directory).generation)
    path.write_bytes(b"garbage")
    broken = Store(store.directory)
    with pytest.raises(StoreError, match="corrupt scores file"):
        query_store(broken, query, k=1)
    assert any("corrupt scores file" in p for p in broken.check())
    with broken.writing():
        broken.repair()
    assert Store(store.directory).check() == []


def test_stores_and_model_files_from_before_the_share_was_recorded_keep_theirs(tmp_path):
    """A store records the share of the cohort it got; one built before it did, like a model
    file calibrated before, was normalised at LEGACY_TOP_SHARE and goes on so."""
    files, cohort = hub_corpus()
    store = store_of(tmp_path, files, Cohort(cohort.vectors, 0.1))
    assert Store(store.directory).score_cohort().share == 0.1 and store.info().score_share == 0.1
    store.db.execute("DELETE FROM meta WHERE key = 'score_top_share'")
    legacy = Store(store.directory)
    assert legacy.score_cohort().share == LEGACY_TOP_SHARE
    query = legacy.embedding_set(legacy.file_id(tmp_path / "f000.wav"))
    q_mean, _ = legacy.query_stats(query.embeddings)
    expected, _ = cohort_stats(query.embeddings, Cohort(cohort.vectors, LEGACY_TOP_SHARE))
    assert q_mean == pytest.approx(expected, abs=1e-5)


def test_info_says_how_queries_score_without_loading_the_faiss_index(tmp_path, monkeypatch):
    # `weighter index info` on a large store read the whole FAISS index to say "s-norm"
    import weighter.index.faiss_index as faiss_index

    files, cohort = hub_corpus()
    store = store_of(tmp_path, files, cohort)
    path = store.directory / store._stats_name(store.generation)

    def refused(*args, **kwargs):
        raise AssertionError("the FAISS index was read")

    monkeypatch.setattr(faiss_index, "read_index", refused)
    assert Store(store.directory, read_only=True).info().scoring == "s-norm"
    path.write_bytes(b"garbage")
    assert Store(store.directory, read_only=True).info().scoring == "cosine (corrupt scores file: repair)"
    path.unlink()
    assert Store(store.directory, read_only=True).info().scoring == "cosine (scores file missing: repair)"
