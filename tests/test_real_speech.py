"""Real recordings as a bank (``weighter synth --voices``), the partials frontend and training
on its cached frames. Tests that need ../shared/real-speech skip with the reason when it is absent."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from weighter.cli import main
from weighter.corpus import ConversationMixer, MixerConfig
from weighter.corpus.recordings import RecordingBank, cut_clips, speaker_split
from weighter.errors import CorpusError

REAL = Path(__file__).resolve().parents[2] / "shared" / "real-speech" / "librispeech"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} is absent (the project's shared real speech)")
resemblyzer = pytest.importorskip("resemblyzer", reason="the partials frontend needs the resemblyzer package")


def _speech_like(rng, seconds, pitch):
    """Bursts of a harmonic tone with 0.3-s pauses: quiet points to cut at."""
    t = np.arange(int(seconds * 16000)) / 16000
    voiced = (np.sin(2 * np.pi * 0.8 * t) > -0.6).astype(np.float32)
    tone = sum(np.sin(2 * np.pi * pitch * h * t) / h for h in range(1, 5))
    return (0.3 * tone * voiced + rng.normal(0, 1e-4, len(t))).astype(np.float32)


@pytest.fixture
def voices(tmp_path):
    rng = np.random.default_rng(0)
    for i, name in enumerate(["ann", "bob", "cyd", "dee"]):
        (tmp_path / name).mkdir()
        sf.write(tmp_path / name / "a.wav", _speech_like(rng, 9.0, 110 + 40 * i), 16000)
    return tmp_path


def test_cut_clips_cuts_at_quiet_points():
    audio = _speech_like(np.random.default_rng(1), 12.0, 150)
    clips = cut_clips(audio, 16000, clip_seconds=3.0)
    assert 3 <= len(clips) <= 5
    assert sum(len(c) for c in clips) <= len(audio)
    for c in clips:  # trimmed: speech within 50 ms of each end
        assert np.abs(c[:800]).max() > 0.01 and np.abs(c[-800:]).max() > 0.01


def test_speaker_split_is_fixed_and_follows_shares():
    names = [f"speaker-{i}" for i in range(4000)]
    splits = [speaker_split(n) for n in names]
    assert splits == [speaker_split(n) for n in names]  # same name, same split
    shares = [splits.count(s) / len(splits) for s in ("train", "validation", "heldout")]
    assert abs(shares[0] - 0.35) < 0.03 and abs(shares[1] - 0.15) < 0.03 and abs(shares[2] - 0.5) < 0.03
    assert {speaker_split(n, (0, 0, 1)) for n in names} == {"heldout"}


def test_recording_bank_mixes_conversations(voices):
    bank = RecordingBank(voices, shares=(1, 0, 0))
    assert bank.identities("train") == ["ann", "bob", "cyd", "dee"] and bank.identities("heldout") == []
    assert all(c.dtype == np.int16 and len(c) >= 16000 for c in bank.clips("ann"))
    conv = ConversationMixer(bank, "train", MixerConfig(2, 3, 12, 12)).sample(np.random.default_rng(0))
    assert 2 <= len(conv.likes) <= 3 and set(conv.likes) <= {"ann", "bob", "cyd", "dee"}
    assert conv.activity(100).shape == (len(conv.likes), 1200)


def test_recording_bank_errors_name_the_thing(tmp_path, voices):
    with pytest.raises(CorpusError, match="no such folder"):
        RecordingBank(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no speaker folders"):
        RecordingBank(tmp_path / "empty")
    (voices / "eve").mkdir()
    (voices / "eve" / "bad.wav").write_bytes(b"not audio at all")
    bank = RecordingBank(voices, shares=(1, 0, 0))
    with pytest.raises(CorpusError, match="speaker eve"):
        bank.clips("eve")


def test_synth_voices_writes_a_corpus_with_truth(voices, tmp_path):
    out = tmp_path / "corpus"
    result = CliRunner().invoke(main, ["-q", "synth", str(out), "--voices", str(voices), "--voice-shares", "0:0:1",
                                       "--files", "3", "--max-speakers", "2", "--max-duration", "15"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["files"] == 3
    rows = (out / "manifest.csv").read_text().splitlines()[1:]
    assert len(rows) == 3 and all(set(r.split(",")[1].split(";")) <= {"ann", "bob", "cyd", "dee"} for r in rows)
    speakers = {line.split()[7] for line in (out / "reference.rttm").read_text().splitlines()}
    assert speakers <= {"ann", "bob", "cyd", "dee"} and speakers


@needs_real
def test_shared_real_speech_split_is_the_documented_one():
    bank = RecordingBank(REAL)
    sizes = {s: len(v) for s, v in bank.split_table().items()}
    assert sizes == {"train": 41, "validation": 14, "heldout": 68}  # docs/real-speech.md


def _partials_model(**kw):
    from weighter.embedder.model import WeighterConfig, WeighterModel

    torch.manual_seed(0)
    return WeighterModel(WeighterConfig(frontend="resemblyzer", partial_hop=50, pooling="mean",
                                        time_strides=(5, 10), channel_shrink=4, **kw)).eval()


@needs_real
def test_partials_are_resemblyzers_own_window_embeddings():
    from resemblyzer import VoiceEncoder
    from resemblyzer.audio import wav_to_mel_spectrogram

    from weighter.audio import load_audio

    audio = load_audio(next(REAL.glob("*/*.flac")))[: 16000 * 6]
    model = _partials_model()
    with torch.no_grad():
        frames = model.frames(torch.from_numpy(audio)[None])[0].numpy()  # (T, 256)
    scaled = audio * (10 ** (-30 / 20) / np.sqrt(np.mean(audio ** 2)))
    encoder = VoiceEncoder("cpu", verbose=False)
    for k in (0, 3):  # window k covers frames [50k, 50k + 160): held by frames [50(k+1), 50(k+2))
        mel = wav_to_mel_spectrogram(scaled[50 * k * 160: (50 * k + 160) * 160 + 240])[:160]
        ref = encoder(torch.from_numpy(mel[None])).detach().numpy()[0]
        assert float(ref @ frames[50 * (k + 1) + 10]) > 0.98


def test_partials_padded_batch_equals_alone():
    rng = np.random.default_rng(2)
    a, b = _speech_like(rng, 7.0, 120), _speech_like(rng, 3.3, 200)
    model = _partials_model()
    wave = torch.zeros(2, len(a))
    wave[0], wave[1, :len(b)] = torch.from_numpy(a), torch.from_numpy(b)
    with torch.no_grad():
        both = model(wave, torch.tensor([len(a), len(b)]))
        alone = model(torch.from_numpy(b)[None])
    n = alone["frames"].shape[1]
    assert torch.allclose(both["frames"][1, :n], alone["frames"][0], atol=1e-5)
    assert torch.allclose(both["embeddings"][1], alone["embeddings"][0], atol=1e-4)
    assert both["frames"][1, n:].abs().max() == 0  # padding holds nothing


def test_cached_training_writes_a_usable_model(voices, tmp_path):
    from weighter.embedder import Embedder
    from weighter.training.cached import Source, train_cached
    from weighter.embedder.model import WeighterConfig
    from weighter.training.train import TrainConfig

    bank = RecordingBank(voices, shares=(1, 0, 0))
    cfg = TrainConfig(steps=4, batch_size=4, max_speakers=2, min_seconds=6, max_seconds=10, eval_every=2,
                      val_files=4, warmup=1)
    model_cfg = WeighterConfig(frontend="resemblyzer", partial_hop=50, pooling="mean", time_strides=(5, 10),
                               channel_shrink=4, slots=3)
    result = train_cached(tmp_path / "m.pt", cfg, model_cfg, [Source(bank, "train")], [Source(bank, "train")],
                          train_files=8, progress=False)
    assert result.steps == 4 and len(result.history) == 2
    embedder = Embedder.load(tmp_path / "m.pt", device="cpu")
    s = embedder.embed([next(voices.glob("*/a.wav"))])[0]
    assert s.embeddings.shape == (3, 256) and s.active.any()
    assert np.allclose(np.linalg.norm(s.embeddings, axis=1), 1, atol=1e-4)


def test_partials_model_gives_its_windows_for_the_slot_split():
    from weighter.embedder.slots import output_row, row_slots

    audio = _speech_like(np.random.default_rng(3), 5.3, 140)
    model = _partials_model(slots=3)
    with torch.no_grad():
        out = model(torch.from_numpy(audio)[None])
    t = out["x"].shape[2]
    k = -(-t // 50)
    assert out["windows"].shape == (1, k, 256) and out["mass"].shape == (1, 3, k)
    assert torch.allclose(out["windows"][0], out["frames"][0, ::50])  # one partial per 50-frame block
    assert torch.allclose(out["mass"].sum(2), out["weights"].sum(2), atol=1e-5)  # every frame's weight, once
    assert int(out["window_ends"][0, -1]) == t
    row = output_row(out, 0, t)
    emb, conf, x = row_slots(row, None, 0.25)  # never split: the slots as they are
    assert np.array_equal(emb, row["embeddings"])
    emb, conf, x = row_slots(row, 1.01, 0.0)  # split whenever two groups exist
    assert len(emb) >= 3 and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)
