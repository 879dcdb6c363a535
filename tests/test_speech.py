"""The speech gate: Silero VAD (silero-vad package) on real generated speech and on tones,
the gate in the embedder, and a store keeping one gate."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from weighter.cli import main
from weighter.corpus import MixerConfig, write_corpus
from weighter.embedder import Embedder
from weighter.embedding_set import EmbeddingSet
from weighter.embedder.speech import (FRAME_RATE, SEGMENT_CHUNKS, SpeechDetector, speech_mask, speech_share,
                                      speech_timeline)
from weighter.errors import WeighterError
from weighter.index import Store, StoreError, add_files


def test_speech_timeline_averages_detector_frames_into_timeline_steps():
    p = np.repeat([0.0, 1.0, 0.0], [100, 50, 50]).astype(np.float32)  # 3.2 s silence, 1.6 s speech, 1.6 s silence
    t = speech_timeline(p, 10.0, 64)  # 10 Hz over the 6.4 s
    assert t.shape == (64,) and t[:32].max() == 0 and t[32:48].min() == 1 and t[48:].max() == 0
    assert 0 < speech_timeline(p, 3.0, 20)[9] < 1  # a 1/3-s step across the edge at 3.2 s: a mean
    w = np.zeros((2, 64), np.float32)
    w[0, :32], w[1, 36:56] = 1.0, 0.5  # one slot on the silence, one mostly on the speech
    assert np.allclose(speech_share(w, t), [0.0, 12 / 20])
    assert speech_share(np.zeros((1, 64), np.float32), t)[0] == 0  # a slot that weighs nothing


def test_speech_mask_keeps_pauses_inside_turns_and_drops_long_stretches():
    t = np.zeros(100, np.float32)  # 10 Hz: speech at 2-3 s and 4.5-5 s (a 1.5-s pause), then 5 s of none
    t[20:30], t[45:50] = 0.9, 0.6
    t[70] = 0.4  # below the detector's 0.5: not speech
    m = speech_mask(t, 10.0, pad_seconds=1.0)
    assert set(np.unique(m)) == {0.0, 1.0}
    assert np.flatnonzero(m).tolist() == list(range(10, 60))  # 1 s either side; the pause closed
    assert speech_mask(t, 10.0, pad_seconds=0.0).sum() == 15
    assert speech_mask(np.zeros(30, np.float32), 10.0).sum() == 0  # no speech anywhere
    assert speech_mask(t[18:25], 10.0, pad_seconds=1.0).tolist() == [1.0] * 7  # shorter than the pad (a 0.7-s file)


def test_detector_hears_generated_speech_and_not_a_tone_and_keeps_torch_threads(tiny_bank, write_tone):
    threads = torch.get_num_threads()
    detector = SpeechDetector()
    assert torch.get_num_threads() == threads  # importing silero_vad sets one thread; undone
    clip = tiny_bank.clips(tiny_bank.identities("train")[0])[0].astype(np.float32) / 32768.0
    speech = np.concatenate([clip] * 6)  # long enough for two segments side by side
    tone = sf.read(str(write_tone("t.wav", seconds=12.0)), dtype="float32")[0]
    probs = detector.probabilities([speech, tone])
    assert [len(p) for p in probs] == [-(-len(speech) // 512), -(-len(tone) // 512)]
    assert len(probs[0]) > SEGMENT_CHUNKS  # crossed a segment boundary
    voiced = np.abs(np.pad(speech, (0, len(probs[0]) * 512 - len(speech)))).reshape(-1, 512).max(1) > 0.05
    assert probs[0][voiced].mean() > 0.6 and probs[1].mean() < 0.1
    alone = detector.probabilities([speech])[0]
    assert np.allclose(alone, probs[0], atol=1e-5)  # what a file gets does not depend on its batch


def test_the_gate_leaves_no_active_slot_on_a_tone_and_keeps_speakers(trained_model, tiny_bank, tmp_path, write_tone):
    model, _ = trained_model
    write_corpus(tiny_bank, tmp_path / "c", "heldout", 3, MixerConfig(1, 2, 6, 9, snr_db=(25, 30)), progress=False)
    speech = sorted((tmp_path / "c" / "audio").glob("*.flac"))
    tone = write_tone("tone.wav", seconds=10.0)
    plain, gated = Embedder.load(model), Embedder.load(model, speech_gate=0.2)
    before, after = plain.embed([tone, *speech]), gated.embed([tone, *speech])
    assert before[0].active.any()  # without the gate the tone has a speaker
    assert not after[0].active.any() and after[0].speech_share.max() < 0.2
    for b, a in zip(before[1:], after[1:]):
        assert a.active.any() and (a.active <= b.active).all()  # the gate only takes slots away
        assert (a.speech_share[a.active] >= 0.2).all() and a.speech_gate == 0.2
    slot = gated.embed([speech[0]])[0].to_json()["slots"][0]
    assert 0 <= slot["speech_share"] <= 1
    after[1].save(tmp_path / "set.npz")
    again = EmbeddingSet.load(tmp_path / "set.npz")
    assert np.array_equal(again.speech_share, after[1].speech_share) and again.speech_gate == 0.2
    after[1].speech_gate = None  # a share without its gate (made by hand) still round-trips
    after[1].save(tmp_path / "bare.npz")
    assert EmbeddingSet.load(tmp_path / "bare.npz").speech_gate is None
    windowed = Embedder.load(model, speech_gate=0.2, window_seconds=4).embed([tone])[0]  # the long-file path
    assert not windowed.active.any()
    # a call opened by 8 s of tone: the gated weightings keep to speech (and 1 s either side of it)
    call = sf.read(str(speech[0]), dtype="float32")[0]
    opened = np.concatenate([0.3 * sf.read(str(write_tone("o.wav", seconds=8.0)), dtype="float32")[0], call])
    sf.write(str(tmp_path / "opened.wav"), opened, 16000)
    for window in (60, 4):  # one window, and the long-file path
        a = Embedder.load(model, window_seconds=window).embed([tmp_path / "opened.wav"])[0]
        b = Embedder.load(model, speech_gate=0.2, window_seconds=window).embed([tmp_path / "opened.wav"])[0]
        assert np.all(b.weightings <= a.weightings + 1e-7) and b.weightings[:, :65].max() == 0
        assert b.weightings[:, 90:].sum() > 0.8 * a.weightings[:, 90:].sum()  # speech kept
    sf.write(str(tmp_path / "short.wav"), call[:19200], 16000)  # 1.2 s: a timeline shorter than the mask's reach
    short = gated.embed([tmp_path / "short.wav"])[0]
    assert short.weightings.shape == (len(short.confidence), 12)
    with pytest.raises(WeighterError, match="speech gate"):
        Embedder.load(model, speech_gate=0.0)


def test_a_store_keeps_its_gate_for_adds_and_queries(trained_model, tiny_bank, tmp_path):
    model, _ = trained_model
    write_corpus(tiny_bank, tmp_path / "c", "heldout", 3, MixerConfig(1, 2, 5, 8), progress=False)
    audio = sorted((tmp_path / "c" / "audio").glob("*.flac"))
    store_dir = tmp_path / "s"
    runner = CliRunner()
    r = runner.invoke(main, ["index", "build", str(audio[0]), "--store", str(store_dir), "--model", str(model),
                             "--speech-gate", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["speech_gate"] == 0.2  # the option alone: 0.2
    r = runner.invoke(main, ["index", "add", str(audio[1]), "--store", str(store_dir), "--model", str(model), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["files"] == 2  # added with the store's gate
    with pytest.raises(StoreError, match="speech gate 0.2, not None"):
        add_files(Store(store_dir), Embedder.load(model), [audio[2]])
    assert Store(store_dir).info().files == 2
    r = runner.invoke(main, ["query", str(audio[2]), "--store", str(store_dir), "--model", str(model), "--json"])
    assert r.exit_code == 0, r.output  # a new file embedded with the store's gate
    r = runner.invoke(main, ["embed", str(audio[0]), "--speech-gate", "1.5", "--json"])
    assert r.exit_code == 2 and "--speech-gate" in r.output
