"""The Python API as a user meets it: top-level names, light imports."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import weighter

ROOT = Path(weighter.__file__).resolve().parent.parent


def loaded_after(statement: str) -> set[str]:
    """The weighter modules loaded by ``statement`` in a fresh interpreter."""
    code = f"import sys, json; {statement}; print(json.dumps(sorted(m for m in sys.modules if m.startswith('weighter'))))"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_importing_the_embedder_loads_neither_training_nor_the_corpus_generator():
    loaded = loaded_after("from weighter.embedder import Embedder")
    assert "weighter.embedder.inference" in loaded  # the check sees what it should
    assert not {m for m in loaded if m.startswith("weighter.corpus")}, loaded
    assert not {m for m in loaded if m.startswith("weighter.training")}, loaded


def test_import_weighter_is_light():
    loaded = loaded_after("import weighter")
    assert loaded == {"weighter"}, loaded


def test_pick_device_still_importable_from_train():
    from weighter.embedder.device import pick_device
    from weighter.training.train import pick_device as from_train

    assert from_train is pick_device
    assert str(pick_device("cpu")) == "cpu"


def test_top_level_names():
    from weighter import Embedder, EmbeddingSet, SlotClusterer, Store, add_files, query_store
    from weighter.cluster import SlotClusterer as from_cluster
    from weighter.embedder.inference import Embedder as from_inference
    from weighter.embedding_set import EmbeddingSet as from_module
    from weighter.index import Store as from_index
    from weighter.index import add_files as add_from_index
    from weighter.index import query_store as query_from_index

    assert (Embedder, EmbeddingSet, Store, SlotClusterer, add_files, query_store) == (
        from_inference, from_module, from_index, from_cluster, add_from_index, query_from_index)
    for name in weighter.__all__:
        assert getattr(weighter, name) is not None, name
    assert set(weighter.__all__) <= set(dir(weighter))


def test_unknown_top_level_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        weighter.Nope  # noqa: B018
