"""The distilled speaker encoder: its network, its file, the frontend "distilled", and a real
(tiny) distillation run on TTS voices through the training channels."""

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from weighter.cli import main
from weighter.embedder.checkpoint import load_encoder, load_model, save_encoder, save_model
from weighter.embedder.model import SpeakerEncoder, WeighterConfig, WeighterModel
from weighter.errors import WeighterError

pytest.importorskip("resemblyzer", reason="the teacher's weights ship in the resemblyzer package")
PARTIALS = dict(partial_hop=50, pooling="mean", time_strides=(5, 10), channel_shrink=4, slots=3)


def _speech_like(seconds: float, pitch: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    voiced = (np.sin(2 * np.pi * 0.7 * t) > -0.5).astype(np.float32)
    tone = sum(np.sin(2 * np.pi * pitch * h * t) / h for h in range(1, 12))
    return (0.2 * tone * voiced + rng.normal(0, 1e-3, len(t))).astype(np.float32)


def _nudged(seed: int = 0) -> SpeakerEncoder:
    """The teacher with its weights moved a little: a stand-in for a distilled student."""
    encoder = SpeakerEncoder.resemblyzer()
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return encoder


def test_encoder_shapes_unit_length_and_determinism():
    encoder = SpeakerEncoder.resemblyzer()
    windows = torch.rand(5, 160, 40)
    a, b = encoder(windows), encoder(windows)
    assert a.shape == (5, 256) and torch.equal(a, b)
    assert torch.allclose(a.norm(dim=1), torch.ones(5), atol=1e-5)
    short = encoder(windows, torch.tensor([160, 80, 160, 40, 160]))  # a row's own last valid frame
    assert torch.allclose(short[[0, 2, 4]], a[[0, 2, 4]]) and not torch.allclose(short[1], a[1])
    assert not any(p.requires_grad for p in encoder.parameters())  # the teacher is frozen


def test_encoder_file_round_trip_and_one_line_errors(tmp_path):
    student = _nudged()
    ident = save_encoder(tmp_path / "e.pt", student, {"teacher": "resemblyzer", "best_step": 7})
    loaded, info = load_encoder(tmp_path / "e.pt")
    assert info["encoder_id"] == ident and ident.startswith("encoder-") and info["best_step"] == 7
    windows = torch.rand(3, 160, 40)
    assert torch.equal(loaded(windows), student(windows))
    assert save_encoder(tmp_path / "f.pt", _nudged(1)) != ident  # the id follows the weights
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    for path, match in [(tmp_path / "bad.pt", "not a readable speaker encoder"),
                        (tmp_path / "absent.pt", "no such speaker encoder file")]:
        with pytest.raises(WeighterError, match=match) as error:
            load_encoder(path)
        assert "\n" not in str(error.value)
    torch.save({"format": 1, "state_dict": {}}, tmp_path / "model_like.pt")
    with pytest.raises(WeighterError, match="not a weighter speaker encoder file"):
        load_encoder(tmp_path / "model_like.pt")
    torch.save({"format": "weighter-encoder-1", "state_dict": {"lstm.weight_ih_l0": torch.zeros(3)}}, tmp_path / "w.pt")
    with pytest.raises(WeighterError, match="encoder weights do not fit"):
        load_encoder(tmp_path / "w.pt")


def test_distilled_frontend_keeps_its_encoder_in_the_model_file(tmp_path):
    student = _nudged()
    model = WeighterModel(WeighterConfig(frontend="distilled", **PARTIALS)).eval()
    model.encoder.load_state_dict(student.state_dict())
    assert {k for k in model.state_dict() if k.startswith("encoder.")}  # in the file, unlike "resemblyzer"
    assert not any(p.requires_grad for p in model.encoder.parameters())
    wave = torch.from_numpy(_speech_like(6.0, 130))[None]
    with torch.no_grad():
        before = model(wave)
    ident = save_model(tmp_path / "m.pt", model, [], 0.5)
    again, meta = load_model(tmp_path / "m.pt")
    with torch.no_grad():
        after = again(wave)
    assert meta.model_id == ident and meta.config["frontend"] == "distilled"
    assert torch.allclose(before["frames"], after["frames"]) and torch.allclose(before["embeddings"], after["embeddings"])
    teacher = WeighterModel(WeighterConfig(frontend="resemblyzer", **PARTIALS)).eval()
    with torch.no_grad():
        frames = teacher.frames(wave)
    assert not torch.allclose(frames, after["frames"])  # its own encoder, not the package's
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes((tmp_path / "m.pt").read_bytes()[:5000])
    with pytest.raises(WeighterError, match="not a readable weighter model") as error:
        load_model(truncated)
    assert "\n" not in str(error.value)


def test_distill_runs_end_to_end_and_keeps_a_step_that_validation_chose(tiny_bank, tmp_path):
    from weighter.training.augment import AugmentConfig, ChannelAugmenter
    from weighter.training.distill import DistillConfig, SpeechSource, distill

    cfg = DistillConfig(clips=8, clip_seconds=3.2, variants=2, steps=4, batch_size=8, eval_every=2, val_draws=1,
                        warmup=1, lr=1e-3)
    babble = [_speech_like(4.0, 100 + 30 * i, i) for i in range(3)]
    augmenter = ChannelAugmenter(tmp_path / "no-material", babble=babble,
                                 config=AugmentConfig(clean=0.0, simulated_rooms=2))
    result = distill(tmp_path / "enc.pt", cfg, [SpeechSource(tiny_bank, "train", real=False)],
                     [SpeechSource(tiny_bank, "validation", real=False)], augmenter, progress=False)
    assert [h["step"] for h in result.history] == [0, 2, 4]
    figures = [{k: v for k, v in h.items() if k not in ("step", "loss")} for h in result.history]
    assert figures[0] == result.teacher  # step 0 is the teacher itself
    kept = [h["step"] for h in result.history].index(result.best_step)
    assert figures[kept] == result.best
    score = [f["degraded_map"] + f["mixed_map"] + f["clean_map"] for f in figures]
    assert score[kept] == max(score)  # the step validation liked best
    encoder, info = load_encoder(tmp_path / "enc.pt")
    assert info["encoder_id"] == result.encoder_id and info["distill"]["steps"] == 4
    for key in ("degraded_map", "clean_map", "mixed_map"):
        assert 0 <= result.teacher[key] <= 1


def test_cli_train_refuses_distilled_without_its_encoder(tmp_path):
    out = CliRunner().invoke(main, ["train", "--synthetic", "--frontend", "distilled", "--partials", "50",
                                    "--out", str(tmp_path / "m.pt")])
    assert out.exit_code == 2 and "--encoder FILE" in out.output
