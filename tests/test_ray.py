"""Embedding on Ray (weighter.embedder.distributed): one local Ray of 2 CPUs for the module."""

import json
import sys
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from weighter.cli import main
from weighter.index import Store, add_files, query_store

ray = pytest.importorskip("ray")

from weighter.embedder.distributed import EXIT_HOOK, RayEmbedder, RayOptions  # noqa: E402


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """A Ray of 2 CPUs started here; its workers inherit the exit hook: an actor that meets
    'kill-me.wav' ends its own process, once (the marker file records it)."""
    marker = tmp_path_factory.mktemp("hook") / "killed"
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
             runtime_env={"env_vars": {EXIT_HOOK: f"kill-me.wav:{marker}"}})
    yield marker
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tiny_bank, tmp_path_factory):
    from weighter.corpus import MixerConfig, write_corpus

    out = tmp_path_factory.mktemp("ray-corpus")
    write_corpus(tiny_bank, out / "c", "heldout", 6, MixerConfig(1, 2, 5, 8), progress=False)
    return sorted((out / "c" / "audio").glob("*.flac"))


def test_a_ray_build_gives_the_same_store_and_reports_bad_files(local_ray, corpus, trained_model, tmp_path):
    from weighter.embedder import Embedder

    model, _ = trained_model
    (tmp_path / "in").mkdir()
    for f in corpus:
        (tmp_path / "in" / f.name).symlink_to(f)
    (tmp_path / "in" / "not-audio.wav").write_text("not audio")
    sf.write(str(tmp_path / "in" / "silent.wav"), np.zeros(32000, np.float32), 16000)
    with Store(tmp_path / "local", create=True) as store:  # the single-process path
        local_errors = []
        add_files(store, Embedder.load(model, device="cpu"), sorted((tmp_path / "in").iterdir()), errors=local_errors)
    r = CliRunner().invoke(main, ["index", "build", str(tmp_path / "in"), "--store", str(tmp_path / "ray"),
                                  "--model", str(model), "--json", "--ray-batch", "2", "--ray"])
    assert r.exit_code == 1, r.output  # the bad files failed, the rest were stored
    assert json.loads(r.stdout)["added"] == len(corpus) and json.loads(r.stdout)["failed"] == 2
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert sorted(lines) == sorted(f"error: {e}" for e in local_errors)  # the same one-liners, one per file

    local, distributed = Store(tmp_path / "local"), Store(tmp_path / "ray")
    assert local.info().active_slots == distributed.info().active_slots > 0
    for f in corpus:
        a = local.embedding_set(local.file_id(tmp_path / "in" / f.name))
        b = distributed.embedding_set(distributed.file_id(tmp_path / "in" / f.name))
        assert np.array_equal(a.active, b.active)
        np.testing.assert_allclose(a.embeddings, b.embeddings, atol=1e-5)
        np.testing.assert_allclose(a.weightings, b.weightings, atol=1e-5)
        got = [(m.file, m.query_slot, m.stored_slot) for m in query_store(distributed, a, k=5)]
        assert got == [(m.file, m.query_slot, m.stored_slot) for m in query_store(local, a, k=5)]


def test_a_worker_killed_mid_build_loses_and_repeats_no_file(local_ray, corpus, trained_model, tmp_path):
    from weighter.embedder import Embedder

    model, _ = trained_model
    (tmp_path / "in").mkdir()
    files = []
    for i, f in enumerate(corpus):
        files.append(tmp_path / "in" / ("kill-me.wav" if i == 3 else f"f{i}.flac"))
        files[-1].symlink_to(f)
    yielded = Counter()

    with RayEmbedder(model, RayOptions(actors=2, batch_size=2)) as r:
        def counted(paths, errors):  # every set the driver receives, counted before the store sees it
            for s in r.stream(paths, errors):
                yielded[s.path] += 1
                yield s

        with Store(tmp_path / "s", create=True) as store:
            errors = []
            result = add_files(store, Embedder.load(model, device="cpu"), files, errors=errors, commit_every=2,
                               embed=counted)
    assert local_ray.exists()  # an actor really died (and only once)
    assert errors == [] and result.added == len(files)
    assert yielded == Counter({str(f): 1 for f in files})
    store = Store(tmp_path / "s")
    assert store.check() == [] and all(store.file_id(f) is not None for f in files)
    assert store.db.execute("SELECT COUNT(*) FROM files").fetchone()[0] == len(files)


def test_without_ray_the_option_says_how_to_install_it(corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: `import ray` raises ImportError
    r = CliRunner().invoke(main, ["index", "build", str(corpus[0]), "--store", str(tmp_path / "s"), "--ray"])
    assert r.exit_code == 1 and r.stderr.strip() == "error: Ray is not installed: pip install 'weighter[ray]'"
    assert not (tmp_path / "s").exists()  # no store was made
