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
    from weighter.embedder.train import TrainConfig, train

    out = tmp_path_factory.mktemp("model") / "model.pt"
    cfg = TrainConfig(steps=6, batch_size=2, min_seconds=4, max_seconds=5, eval_every=3, val_files=4, max_speakers=2)
    return out, train(out, cfg, WeighterConfig(**SMALL_MODEL), bank=tiny_bank, progress=False)
