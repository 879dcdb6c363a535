"""Groups from the store's evidence (weighter.cluster.graph) and the corpus-fitted match
probability (weighter.index.pair_model)."""

import json

import numpy as np
import pytest

from weighter.cluster.graph import GraphClusterer, neighbour_graph
from weighter.index.pair_model import MIN_PAIRS, PairPrior, adapt_prior


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _probability_from_cosine(cos, a, b):
    """A stand-in calibration: p rises from 0 at cosine 0.8 to 1 at 0.95."""
    return np.clip((cos - 0.8) / 0.15, 0, 1)


def test_a_voice_in_exactly_two_files_is_linked_and_two_alike_voices_in_one_file_each_are_not():
    rng = np.random.default_rng(0)
    voices = _unit(rng.normal(size=(6, 64)))
    pair = _unit(voices[0] + rng.normal(0, 0.03, (2, 64)))  # one voice, heard in files 0 and 1
    alike = _unit(np.stack([voices[1], voices[1] * 0.7 + voices[2] * 0.71]))  # two alike voices, one file each
    strangers = voices[3:]
    X = np.concatenate([pair, alike, strangers])
    files = np.array([0, 1, 2, 3, 4, 5, 6])
    assert 0.5 < float(alike[0] @ alike[1]) < 0.8 < float(pair[0] @ pair[1])  # alike, less than one voice twice
    clusterer = GraphClusterer(neighbours=3).fit(X, files=files, pair_probability=_probability_from_cosine)
    labels = clusterer.labels_
    assert labels[0] >= 0 and labels[0] == labels[1]  # the voice of two files: a group of two
    assert labels[2] < 0 or labels[2] != labels[3]  # the two alike voices: not one group
    assert (labels[4:] < 0).all()  # strangers: outliers
    assert len(clusterer.persistence_) == labels.max() + 1


def test_no_edge_within_a_file_and_at_most_one_slot_of_a_file_in_a_group():
    rng = np.random.default_rng(1)
    voice = _unit(rng.normal(size=64))
    X = _unit(voice + rng.normal(0, 0.02, (4, 64)))  # one voice four times...
    files = np.array([0, 0, 1, 2])  # ... twice in file 0 (a slot split in two, say)
    graph = neighbour_graph(np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]), np.full((4, 3), 0.95), files)
    assert not any(files[a] == files[b] for a, b in zip(graph.a, graph.b))
    assert len(graph.a) == 5  # 6 pairs less the one inside file 0, each once
    clusterer = GraphClusterer(neighbours=3).fit(X, files=files, pair_probability=_probability_from_cosine)
    grouped = np.flatnonzero(clusterer.labels_ >= 0)
    assert len(grouped) == 3 and len(set(files[grouped])) == 3 and clusterer.duplicates_ == 1


def test_two_voices_chained_by_one_weak_pair_are_two_groups():
    rng = np.random.default_rng(2)
    a, b = _unit(rng.normal(size=(2, 64)))
    X = _unit(np.concatenate([a + rng.normal(0, 0.05, (5, 64)), b + rng.normal(0, 0.05, (5, 64))]))
    files = np.arange(10)
    p = X @ X.T
    probability = lambda cos, i, j: np.where((i < 5) == (j < 5), 0.97, 0.0)  # noqa: E731
    weak = lambda cos, i, j: np.where((i < 5) == (j < 5), 0.97,  # noqa: E731
                                      np.where(((i == 4) & (j == 5)) | ((i == 5) & (j == 4)), 0.6, 0.0))
    for fn in (probability, weak):
        labels = GraphClusterer(neighbours=9).fit(X, files=files, pair_probability=fn).labels_
        assert len(set(labels[:5].tolist())) == 1 and len(set(labels[5:].tolist())) == 1
        assert labels[0] != labels[5] and labels[0] >= 0 and labels[5] >= 0
    assert p.shape == (10, 10)


def _calibration(stated=0.03):
    """Strangers N(0, 1), matches N(4, 1.0): log likelihood ratio 4 s - 8, stated at ``stated``."""
    return PairPrior(4.0, -8.0 + float(np.log(stated / (1 - stated))), stated=stated, prior=stated)


@pytest.mark.parametrize("prior", [0.01, 0.05, 0.4])
def test_a_mixture_of_known_prior_is_recovered_within_two_hundredths(prior):
    rng = np.random.default_rng(3)
    n = 20_000
    matches = int(prior * n)
    scores = np.concatenate([rng.normal(4.0, 1.0, matches), rng.normal(0.0, 1.0, n - matches)])
    fitted = adapt_prior(_calibration(), scores)
    assert abs(fitted.prior - prior) <= 0.02 and fitted.pairs == n
    p = fitted.probability(scores)
    truth = np.r_[np.ones(matches), np.zeros(n - matches)]
    for lo in (0.1, 0.3, 0.5, 0.7):  # the posterior means what it says where it has data
        band = (p >= lo) & (p < lo + 0.2)
        if band.sum() > 100:
            assert abs(truth[band].mean() - p[band].mean()) < 0.1
    stated = _calibration().probability(scores)  # at 3%: wrong wherever the corpus is not at 3%
    if prior >= 0.05:
        assert abs(truth[(stated > 0.4) & (stated < 0.6)].mean() - 0.5) > abs(
            truth[(p > 0.4) & (p < 0.6)].mean() - 0.5)


def test_the_prior_moves_p_and_round_trips_as_json():
    model = _calibration()
    low, high = model.with_prior(0.01, 500).probability([2.0]), model.with_prior(0.3, 500).probability([2.0])
    assert low < model.probability([2.0]) < high
    assert (np.diff(model.probability(np.linspace(-3, 12, 50))) >= 0).all()  # never less for a higher score
    assert PairPrior.from_json(model.to_json()) == model
    assert PairPrior.from_json("") is None and PairPrior.from_json("{bad") is None


def test_too_few_pairs_fit_nothing_and_strangers_only_mean_almost_no_matches():
    assert adapt_prior(_calibration(), np.zeros(MIN_PAIRS - 1)) is None
    strangers = np.random.default_rng(4).normal(0, 1, 5000)
    assert adapt_prior(_calibration(), strangers).prior < 0.005


def test_a_store_fits_its_own_prior_and_its_queries_use_it(corpus_store, tmp_path):
    import shutil

    from weighter.index import Store, query_store
    from weighter.index.pair_model import fit_store, store_calibration

    copy = tmp_path / "store"
    shutil.copytree(corpus_store[0], copy)
    with Store(copy) as store:
        assert store.meta("pair_prior") == ""  # 6 files are 15 pairs: too few, the stated prior stays
        assert store.info().pair_prior_fitted is False
        model = store_calibration(store)
        first = store.embedding_set(store.file_id(str(next(iter(store.db.execute("SELECT path FROM files")))[0])))
        before = query_store(store, first, k=3)
        with store.writing():  # a corpus where far more pairs share a voice: every p rises
            store.set_meta("pair_prior", model.with_prior(0.5, 400).to_json())
        after = query_store(store, first, k=3)
        assert (store.info().pair_prior, store.info().pair_prior_fitted) == (0.5, True)
        assert [m.file for m in after] == [m.file for m in before]
        assert all(a.probability >= b.probability for a, b in zip(after, before))
        assert [m.probability for m in after] == [round(float(p), 4) for p in
                                                  model.with_prior(0.5, 400).probability([m.score for m in after])]
        with store.writing():
            assert fit_store(store) is None and store.meta("pair_prior") == ""


def test_cluster_on_evidence_from_the_cli_and_query_results_name_their_group(corpus_store, tmp_path):
    import shutil

    from click.testing import CliRunner

    from weighter.cli import main
    from weighter.cluster import run_result
    from weighter.index import Store

    copy = tmp_path / "store"
    shutil.copytree(corpus_store[0], copy)
    runner = CliRunner()
    out = runner.invoke(main, ["cluster", "--store", str(copy), "--on", "evidence", "--neighbours", "4", "--json"],
                        catch_exceptions=False)
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["run"]["params"]["method"] == "graph" and result["run"]["params"]["neighbours"] == 4
    with Store(copy) as store:
        group_of = {(m["file"], m["slot"]): g["id"] for g in run_result(store, result["run"]["id"])["groups"]
                    for m in g["members"]}
        first = str(next(iter(store.db.execute("SELECT path FROM files")))[0])
    answer = json.loads(runner.invoke(main, ["query", first, "--store", str(copy), "-k", "3", "--json"],
                                      catch_exceptions=False).output)
    assert answer["results"]
    for m in answer["results"]:  # the group of the matched stored slot in the run just made, -1 outside any
        assert m["group"] == group_of.get((m["file"], m["stored_slot"]), -1)
    text = runner.invoke(main, ["query", first, "--store", str(copy), "-k", "3"], catch_exceptions=False).output
    assert ("group " in text) or ("outlier" in text)


def test_a_fit_that_says_most_pairs_share_a_voice_is_not_believed(corpus_store, tmp_path, monkeypatch, caplog):
    import shutil

    from weighter.index import Store
    from weighter.index import pair_model

    copy = tmp_path / "store"
    shutil.copytree(corpus_store[0], copy)
    with Store(copy) as store:
        with store.writing():
            store.set_meta("pair_prior_stated", "0.03")
            model = pair_model.store_calibration(store)
            assert model is not None and model.pairs == 0
            # every file pair scoring like a sure match: EM runs to its cap
            monkeypatch.setattr(pair_model, "file_pair_scores", lambda store, seed=0: np.full(400, 50.0))
            assert pair_model.fit_store(store) is None
            assert store.meta("pair_prior") == "" and "does not describe this corpus" in caplog.text
            # a believable corpus: a few pairs alike, most not
            scores = np.r_[np.full(20, 50.0), np.full(380, -50.0)]
            monkeypatch.setattr(pair_model, "file_pair_scores", lambda store, seed=0: scores)
            fitted = pair_model.fit_store(store)
            assert fitted is not None and abs(fitted.prior - 0.05) < 0.01
            assert store.info().pair_prior_fitted is True


def test_a_large_store_scores_a_seeded_sample_of_whole_files(tmp_path):
    """Past ``max_slots`` active slots the base rate is fitted on a seeded draw of whole files
    (asking SQLite only about the files drawn): at most ``max_slots`` slots, the same draw for
    the same seed and store, another for another seed, each pair's best score as over all files;
    a grown store's draw keeps the earlier one's files but those that the new files push out."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_index import DIM, make_set
    from weighter.index import Store
    from weighter.index.pair_model import _sampled_files, file_pair_scores

    basis = np.linalg.qr(np.random.default_rng(1).normal(size=(DIM, DIM)))[0].astype(np.float32)
    rng = np.random.default_rng(3)
    store = Store(tmp_path / "store", create=True)
    with store.writing():
        store.apply([(make_set(tmp_path / f"f{i}.wav", list(rng.choice(DIM, 1 + i % 3, replace=False)), basis, seed=i),
                      f"h{i}") for i in range(80)])
    with store.writing():
        store.apply([], [tmp_path / f"f{i}.wav" for i in range(0, 80, 7)])  # gaps in the file ids
    everyone = _sampled_files(store, 10_000, 0)
    assert len(everyone) == 80 - len(range(0, 80, 7)) == store.info().files
    sample = _sampled_files(store, 40, 0)
    per_file = dict(store.db.execute("SELECT file_id, SUM(active) FROM slots GROUP BY file_id").fetchall())
    assert 40 - 3 < sum(per_file[f] for f in sample) <= 40 and set(sample) <= set(everyone)
    assert _sampled_files(store, 40, 0).tolist() == sample.tolist()
    assert _sampled_files(store, 40, 1).tolist() != sample.tolist()
    file_of, _, vectors = store.active_slots_of(sample.tolist())
    cos = vectors @ vectors.T
    truth = [cos[np.ix_(file_of == a, file_of == b)].max() for i, a in enumerate(sample) for b in sample[i + 1:]]
    assert np.allclose(np.sort(file_pair_scores(store, max_slots=40)), np.sort(truth), atol=1e-5)
    with store.writing():  # a store that grows keeps its draw but for the new files ranked inside it
        store.apply([(make_set(tmp_path / f"g{i}.wav", [i % DIM], basis, seed=100 + i), f"g{i}") for i in range(40)])
    grown = _sampled_files(store, 40, 0)
    kept = set(grown) & set(everyone)
    new = set(grown) - kept
    assert kept <= set(sample) and new and len(set(sample) - kept) <= len(new) + 2  # out: about as many as in
    store.close()
