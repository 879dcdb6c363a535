from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from weighter.corpus import BankSpec, build_bank


@pytest.fixture(scope="session")
def tiny_bank(tmp_path_factory):
    """A real utterance bank from espeak-ng and flite: 5 base voices x 3 pitches, 3 clips each."""
    return build_bank(BankSpec(max_voices=5, clips_per_identity=3), tmp_path_factory.mktemp("bank") / "bank",
                      progress=False)


def tone(seconds: float, rate: int = 16000, freq: float = 220.0, channels: int = 1, amp: float = 0.3):
    t = np.arange(int(seconds * rate)) / rate
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.fixture
def write_tone(tmp_path):
    def write(name: str, seconds: float = 2.0, rate: int = 16000, **kw) -> Path:
        path = tmp_path / name
        sf.write(str(path), tone(seconds, rate, **kw), rate)
        return path

    return write


SMALL_MODEL = dict(frame_dim=48, d_model=32, layers=1, heads=2, ff_dim=64, slots=4, embed_dim=32)


@pytest.fixture(scope="session")
def trained_model(tiny_bank, tmp_path_factory):
    """A tiny model really trained for 6 steps on the tiny bank: (path, training result)."""
    from weighter.embedder import WeighterConfig
    from weighter.training.train import TrainConfig, train

    out = tmp_path_factory.mktemp("model") / "model.pt"
    cfg = TrainConfig(steps=6, batch_size=2, min_seconds=4, max_seconds=5, eval_every=3, val_files=4, max_speakers=2)
    return out, train(out, cfg, WeighterConfig(**SMALL_MODEL), bank=tiny_bank, progress=False)


@pytest.fixture(scope="session")
def corpus_store(trained_model, tiny_bank, tmp_path_factory):
    """weighter serve's store: 6 mixed conversations embedded by the tiny model and clustered once,
    and 2 more files kept back: (store dir, audio dir, model, the 2 files)."""
    from weighter.cluster import SlotClusterer, cluster_store
    from weighter.corpus import MixerConfig, write_corpus
    from weighter.embedder import Embedder
    from weighter.index import Store, add_files

    model, _ = trained_model
    root = tmp_path_factory.mktemp("serve")
    write_corpus(tiny_bank, root / "c", "heldout", 8, MixerConfig(1, 2, 5, 8), progress=False)
    audio = sorted((root / "c" / "audio").glob("*.flac"))
    with Store(root / "store", create=True) as store:
        add_files(store, Embedder.load(model), audio[:6])
        cluster_store(store, SlotClusterer(min_cluster_size=2))
    return root / "store", root / "c" / "audio", model, audio[6:]
