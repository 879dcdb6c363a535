import json
import logging
from pathlib import Path
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from weighter.cli import main
from weighter.corpus import MixerConfig, UtteranceBank, write_corpus
from weighter.embedder import Embedder, WeighterConfig, WeighterModel
from weighter.embedder.checkpoint import load_model, save_model
from weighter.training.losses import bce, file_prediction, wbce
from weighter.embedder.model import _masked_group_norm
from weighter.training.train import TrainConfig, margin_cross_entropy, train
from weighter.errors import AudioError, WeighterError

from conftest import SMALL_MODEL as SMALL


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return WeighterModel(WeighterConfig(num_likes=5, **SMALL)).eval()


def test_shapes_weights_and_confidence(model):
    wave = torch.randn(3, 16000 * 4) * 0.1
    lengths = torch.tensor([16000 * 4, 16000 * 3, 16000 * 2])
    out = model(wave, lengths)
    b, n, t = out["x"].shape
    assert (b, n) == (3, 4) and out["embeddings"].shape == (3, 4, 32)
    valid = out["mask"]
    assert torch.allclose(out["weights"].sum(2), torch.ones(3, 4), atol=1e-5)  # W sums to 1 per slot
    assert (out["weights"] * ~valid[:, None]).abs().max() == 0  # padding weighs nothing
    assert ((out["confidence"] >= 0) & (out["confidence"] <= 1)).all()
    assert torch.allclose(out["embeddings"].norm(dim=-1), torch.ones(3, 4), atol=1e-5)
    # confidence is X averaged with weights X
    x = out["x"][0]
    assert torch.allclose(out["confidence"][0], (x * x).sum(1) / x.sum(1), atol=1e-6)


@pytest.mark.parametrize("lengths", [[700, 400], [703, 697, 160, 159], [120, 70]])  # [120, 70]: a batch shorter than a window
def test_window_pooling_averages_window_embeddings_by_slot_mass(model, lengths):
    t = lengths[0]
    frames = torch.randn(len(lengths), t, model.config.frame_dim)
    mask = torch.arange(t)[None] < torch.tensor(lengths)[:, None]
    frames = frames * mask[..., None]
    w = torch.rand(len(lengths), 3, t) * mask[:, None]
    w = w / w.sum(2, keepdim=True)
    fast = model.window_pool(w, frames, mask)
    size, hop = model.config.pool_window, model.config.pool_hop
    for b, length in enumerate(lengths):  # the slow way: each of the row's own windows (every hop
        starts = list(range(0, max(length - size, 0) + 1, hop))  # from its start, the last ending at
        if starts[-1] + size < length:                   # its last frame) pooled with model.pool, then
            starts.append(length - size)                 # weighted by slot mass
        windows = torch.zeros(len(starts), t)
        for i, s in enumerate(starts):
            windows[i, s:s + size] = mask[b, s:s + size] / max(int(mask[b, s:s + size].sum()), 1)
        inside = windows.sum(1) > 0
        emb = model.pool(windows[inside][None], frames[b:b + 1])[0]
        mass = torch.stack([w[b, :, s:s + size].sum(1) for s in starts], 1)[:, inside]
        assert torch.allclose(fast[b], torch.nn.functional.normalize(mass @ emb, dim=-1), atol=1e-5)


def test_log_mel_and_frame_norms_compute_what_torchaudio_and_torch_do(model):
    """The frontend's own fast paths: |STFT|^2 as re^2 + im^2 (torchaudio's MelSpectrogram takes
    a complex abs) and the masked group norm (nn.GroupNorm, on a row without padding)."""
    wave = torch.randn(2, 16000 * 3) * 0.1
    torch.testing.assert_close(model.logmel.power_mel(wave), model.logmel.mel(wave).transpose(1, 2), rtol=1e-5, atol=1e-7)
    norm = torch.nn.GroupNorm(1, 24)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(2, 24, 300) * 3 + 1
    m = torch.ones(2, 1, 300)
    with torch.no_grad():
        torch.testing.assert_close(_masked_group_norm(norm, x, m), norm(x), rtol=1e-4, atol=1e-5)
        m[1, :, 200:] = 0  # a padded row is normed over its own frames, zero past them
        got = _masked_group_norm(norm, x * m, m)
        torch.testing.assert_close(got[1, :, :200], norm(x[1:, :, :200])[0], rtol=1e-4, atol=1e-5)
        assert torch.all(got[1, :, 200:] == 0)


def test_a_padded_batch_gives_each_file_what_it_gives_alone():
    """Batching files of different lengths (as the embedder does) must not change any file's
    slots: norms, convolutions, position embedding and pooling windows see only its frames."""
    torch.manual_seed(1)
    model = WeighterModel(WeighterConfig(**SMALL, pooling="windows")).eval()
    lengths = [16000 * 9, 16000 * 6 + 1234, 16000 * 1]  # the last is shorter than one pooling window
    wave = torch.zeros(3, lengths[0])
    for b, n in enumerate(lengths):
        wave[b, :n] = torch.randn(n) * 0.1
    with torch.no_grad():
        batch = model(wave, torch.tensor(lengths))
        for b, n in enumerate(lengths):
            alone = model(wave[b:b + 1, :n])
            t = alone["x"].shape[2]
            torch.testing.assert_close(batch["x"][b, :, :t], alone["x"][0], atol=2e-5, rtol=1e-4)
            torch.testing.assert_close(batch["confidence"][b], alone["confidence"][0], atol=2e-5, rtol=1e-4)
            torch.testing.assert_close(batch["embeddings"][b], alone["embeddings"][0], atol=2e-5, rtol=1e-4)


def test_window_pooling_model_and_its_distinct_id(tmp_path):
    torch.manual_seed(0)
    frames_model = WeighterModel(WeighterConfig(**SMALL)).eval()
    windows_model = WeighterModel(WeighterConfig(**SMALL, pooling="windows")).eval()
    windows_model.load_state_dict(frames_model.state_dict())
    wave = torch.randn(1, 16000 * 5) * 0.1
    a, b = frames_model(wave), windows_model(wave)
    assert torch.equal(a["weights"], b["weights"]) and not torch.allclose(a["embeddings"], b["embeddings"])
    assert torch.allclose(b["embeddings"].norm(dim=-1), torch.ones(1, SMALL["slots"]), atol=1e-5)
    ids = {save_model(tmp_path / f"{m.config.pooling}.pt", m, [], 0.5) for m in (frames_model, windows_model)}
    assert len(ids) == 2  # same weights, other embeddings: another model id, so stores keep them apart


def test_repeat_interleave_alignment(model):
    out = model(torch.randn(1, 16000 * 3) * 0.1)
    x = out["x"][0]  # (N, T): constant within each block of 15 frames, as X is upsampled by repetition
    t = x.shape[1] // 15 * 15
    blocks = x[:, :t].reshape(x.shape[0], -1, 15)
    assert torch.allclose(blocks, blocks[..., :1].expand_as(blocks))
    assert not torch.allclose(blocks[:, 0, 0], blocks[:, 1, 0]) or not torch.allclose(blocks[:, 1, 0], blocks[:, 2, 0])


def test_wbce_gradient_is_bounded_where_bce_explodes():
    p = torch.tensor([0.5, 0.9, 0.999, 0.999999], requires_grad=True)
    wbce(torch.zeros(4), p).sum().backward()
    assert torch.allclose(p.grad, torch.ones(4))  # d/dp (0 * -ln p + p) = 1 everywhere
    q = p.detach().clone().requires_grad_(True)
    bce(torch.zeros(4), q).sum().backward()
    assert q.grad[2] > 900  # 1 / (1 - p) at p = 0.999
    # same minimiser as BCE: p = y
    grid = torch.linspace(0.01, 2.0, 400)
    assert abs(float(grid[wbce(torch.full_like(grid, 0.7), grid).argmin()]) - 0.7) < 0.01


def test_bce_is_binary_cross_entropy_written_out():
    y = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.3])
    p = torch.tensor([0.2, 0.7, 1.0, 0.0, 0.5])  # ends clipped by eps, as before
    assert torch.allclose(bce(y, p), F.binary_cross_entropy(p.clamp(1e-6, 1 - 1e-6), y, reduction="none"))


def test_files_without_speakers_train_every_slot_towards_silence(tiny_bank, tmp_path):
    """--empty: a batch of files with no speaker (no likes, no activity rows) gives finite losses,
    no identity loss, and a few steps on it lower every slot's confidence."""
    from weighter.training.train import BankBatches, losses

    cfg = TrainConfig(batch_size=3, min_seconds=4, max_seconds=6, empty=1.0)
    data = BankBatches(tiny_bank, "train", cfg)
    torch.manual_seed(0)
    model = WeighterModel(WeighterConfig(**SMALL, num_likes=len(data.likes)))
    wave, lengths, y, activity, speakers = data.sample(np.random.default_rng(0), model.frame_rate)
    assert y.sum() == 0 and all(len(a) == 0 for a in activity) and speakers == [[], [], []]
    with torch.no_grad():
        before = model(wave, lengths)["confidence"]
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(10):
        parts = losses(model, model(wave, lengths), y, activity, speakers, cfg)
        assert set(parts) == {"file", "activity", "oracle", "total"} and torch.isfinite(parts["total"])
        optimiser.zero_grad()
        parts["total"].backward()
        optimiser.step()
    with torch.no_grad():
        after = model(wave, lengths)["confidence"]
    assert (after < before).all() and after.mean() < before.mean() - 0.05
    refused = CliRunner().invoke(main, ["train", "--synthetic", "--out", str(tmp_path / "m.pt"), "--empty", "1.5"])
    assert refused.exit_code == 2 and "--empty" in refused.output


def test_training_losses_run_under_bfloat16_autocast(tiny_bank):
    """The GPU path trains under bfloat16 autocast: the losses must take bf16 activations
    (slot matching, index puts, the frame BCE) and give float32 losses with gradients."""
    from weighter.training.train import BankBatches, BankClips, losses, margin_cross_entropy

    cfg = TrainConfig(batch_size=3, min_seconds=4, max_seconds=6, pretrain_batch=4, pretrain_seconds=2.0)
    data = BankBatches(tiny_bank, "train", cfg)
    model = WeighterModel(WeighterConfig(**SMALL, num_likes=len(data.likes)))
    wave, lengths, y, activity, speakers = data.sample(np.random.default_rng(0), model.frame_rate)
    assert max(len(a) for a in activity) > 1  # a file of two speakers, for the separation loss
    for balance, separation in ((False, 0.0), (True, 1.0)):
        cfg.balance_activity, cfg.separation = balance, separation
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(wave, lengths)
            assert out["x"].dtype == torch.bfloat16  # what the losses are given on a GPU
            parts = losses(model, out, y, activity, speakers, cfg)
        assert set(parts) == {"file", "activity", "identity", "oracle", "total"} | ({"separation"} if separation else set())
        assert parts["total"].dtype == torch.float32 and torch.isfinite(parts["total"])
        model.zero_grad()
        parts["total"].backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    wave, who = BankClips(tiny_bank, cfg, data.likes).sample(np.random.default_rng(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        frames = model.frames(wave)
        pooled = model.pool(torch.full((len(who), 1, frames.shape[1]), 1.0 / frames.shape[1]), frames)[:, 0]
        assert torch.isfinite(margin_cross_entropy(model, pooled, who))


def test_separation_loss_is_how_far_two_speakers_slots_are_too_alike():
    from weighter.training.train import SEPARATION_COSINE, separation_loss

    same = F.normalize(torch.ones(3, 8), dim=-1)  # three slots, one direction: every pair at cosine 1
    assert float(separation_loss(same)) == pytest.approx(1 - SEPARATION_COSINE)
    assert float(separation_loss(torch.eye(3, 8))) == 0.0  # orthogonal: nothing to push
    e = torch.tensor([[1.0, 0.0], [0.8, 0.6]], requires_grad=True)  # cosine 0.8: pushed apart
    separation_loss(e).backward()
    step = e.detach() - 0.1 * e.grad
    assert float(F.cosine_similarity(step[0], step[1], 0)) < 0.8


def test_balanced_activity_weights_give_speech_and_silence_half_each():
    from weighter.training.train import BALANCE_CAP, balanced_weights

    target = torch.zeros(4, 40)
    target[0, :4] = 1  # heard 4 of 40 frames
    target[1, :36] = 1  # heard in all 30 valid frames (and 6 of the padding)
    target[2] = 1  # heard throughout
    target[3, :1] = 1  # heard one frame: its weight is capped
    valid = torch.ones(4, 40)
    valid[:, 30:] = 0  # the last 10 frames are padding
    w = balanced_weights(target, valid)
    assert torch.all(w[:, 30:] == 0)
    speech, silence = float((w[0] * target[0]).sum()), float((w[0] * (1 - target[0])).sum())
    assert speech == pytest.approx(15) and silence == pytest.approx(15)  # half of the 30 valid frames each
    assert torch.all(w[1, :30] == 1) and torch.all(w[2, :30] == 1)  # speech alone in the valid frames: unweighted
    assert float(w[3, 0]) == BALANCE_CAP and float(w[3, 1]) == pytest.approx(30 / (2 * 29))


def test_slot_combinations():
    p = torch.tensor([[[0.9, 0.1], [0.8, 0.2]]])  # (B=1, N=2, K=2)
    c = torch.tensor([[1.0, 0.5]])
    assert torch.allclose(file_prediction(p, c, "sum"), torch.tensor([[1.3, 0.2]]))
    assert torch.allclose(file_prediction(p, c, "max"), torch.tensor([[0.9, 0.1]]))
    assert torch.allclose(file_prediction(p, c, "noisy_or"), torch.tensor([[1 - 0.1 * 0.6, 1 - 0.9 * 0.9]]))
    with pytest.raises(ValueError):
        file_prediction(p, c, "mean")


def test_save_load_round_trip(model, tmp_path):
    path = tmp_path / "m.pt"
    ident = save_model(path, model, ["a", "b", "c", "d", "e"], 0.42)
    loaded, payload = load_model(path)
    assert payload.model_id == ident and payload.threshold == 0.42 and payload.likes[0] == "a"
    wave = torch.randn(1, 16000 * 2) * 0.1
    assert torch.allclose(loaded(wave)["embeddings"], model(wave)["embeddings"], atol=1e-6)


def test_corrupt_truncated_foreign_and_unsafe_files_are_refused(model, tmp_path):
    good = tmp_path / "m.pt"
    save_model(good, model, list("abcde"), 0.5)
    truncated = tmp_path / "t.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    text = tmp_path / "x.pt"
    text.write_text("hello")
    other = tmp_path / "o.pt"
    torch.save({"weights": torch.zeros(2)}, other)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    unsafe = tmp_path / "u.pt"
    unsafe.write_bytes(pickle.dumps({"format": 1, "state_dict": Evil()}))
    for path, reason in [(truncated, "not a readable weighter model"), (text, "not a readable weighter model"),
                         (other, "not a weighter model file"), (unsafe, "not a readable weighter model"),
                         (tmp_path / "none.pt", "no such model file")]:
        with pytest.raises(WeighterError, match=reason):
            load_model(path)
    future = tmp_path / "f.pt"
    payload = torch.load(good, weights_only=True)
    payload["format"] = 99
    torch.save(payload, future)
    with pytest.raises(WeighterError, match="format 99 is not supported"):
        load_model(future)
    payload["format"] = 1
    payload["config"]["pooling"] = "attention"  # a choice this version does not know
    torch.save(payload, future)
    with pytest.raises(WeighterError, match="does not match this weighter version.*unknown pooling 'attention'"):
        load_model(future)


@pytest.fixture
def trained(trained_model):
    return trained_model


def test_tiny_train_then_embed_generated_audio(trained, tiny_bank, tmp_path):
    out, result = trained
    assert out.exists() and len(result.history) == 2
    assert out.with_name(out.name + ".ckpt").exists()
    write_corpus(tiny_bank, tmp_path / "c", "heldout", 3, MixerConfig(1, 2, 5, 9), progress=False)
    embedder = Embedder.load(out, device="cpu")
    files = sorted((tmp_path / "c" / "audio").glob("*.flac"))
    sets = embedder.embed(files)
    assert [s.path for s in sets] == [str(f) for f in files]
    for s in sets:
        assert s.embeddings.shape == (4, 32) and s.confidence.shape == (4,)
        assert s.weightings.shape == (4, int(np.ceil(s.duration * 10)))
        assert s.model_id == embedder.model_id


def test_long_files_are_windowed_and_merged(trained, tiny_bank, tmp_path):
    out, _ = trained
    write_corpus(tiny_bank, tmp_path / "c", "train", 1, MixerConfig(1, 2, 13, 13), progress=False)
    path = next((tmp_path / "c" / "audio").glob("*.flac"))
    whole = Embedder.load(out).embed([path])[0]
    windowed = Embedder.load(out, window_seconds=5).embed([path])[0]
    assert windowed.weightings.shape[1] == whole.weightings.shape[1] == 130
    assert windowed.active.all() and 1 <= len(windowed.active) <= 3 * 4
    # every window's weightings span its whole length, so later windows do not drift early
    embedder = Embedder.load(out, window_seconds=5)
    parts = [embedder._run([np.zeros(n, np.float32) + 0.01])[0][2] for n in (5 * 16000, 3 * 16000)]
    assert [x.shape[1] for x in parts] == [500, 300]
    # within a window, two active slots alike are one like, as for a short file
    embedder.threshold, embedder.distinct_cosine = 0.5, 0.9
    e = np.eye(3, 8, dtype=np.float32)
    parts = [(np.stack([e[0], e[0], e[1]]), np.array([0.9, 0.8, 0.9], np.float32), np.ones((3, 500), np.float32), None),
             (np.stack([e[1], e[2], e[0]]), np.array([0.9, 0.1, 0.1], np.float32), np.ones((3, 300), np.float32), None)]
    merged = embedder._assemble(Path("two-windows.flac"), parts, 8.0)
    assert merged.active.sum() == 2 and merged.weightings.shape == (2, 80)


def test_an_array_embeds_as_its_file_does(trained, tiny_bank, tmp_path):
    out, _ = trained
    write_corpus(tiny_bank, tmp_path / "c", "train", 1, MixerConfig(1, 2, 13, 13), progress=False)
    path = next((tmp_path / "c" / "audio").glob("*.flac"))
    audio = sf.read(str(path), dtype="float32")[0]
    for window in (60.0, 5.0):  # one window, and three windows merged
        embedder = Embedder.load(out, window_seconds=window)
        from_file, from_array = embedder.embed([path])[0], embedder.embed_audio(audio, name="call-7")
        assert from_array.path == "call-7" and from_array.duration == pytest.approx(from_file.duration)
        assert np.allclose(from_array.embeddings, from_file.embeddings, atol=1e-5)
        assert np.array_equal(from_array.active, from_file.active)
        assert np.allclose(from_array.weightings, from_file.weightings, atol=1e-5)


def test_embed_reports_bad_files_and_goes_on(trained, tmp_path):
    out, _ = trained
    good = tmp_path / "good.wav"
    sf.write(str(good), (0.1 * np.random.default_rng(0).normal(size=32000)).astype(np.float32), 16000)
    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(32000, np.float32), 16000)
    errors = []
    sets = Embedder.load(out).embed([good, silent, tmp_path / "missing.wav"], errors=errors)
    assert [s.path for s in sets] == [str(good)]
    assert sorted(e.reason.split(" ")[0] for e in errors) == ["all", "no"]
    with pytest.raises(AudioError, match="all silent"):
        Embedder.load(out).embed([silent])


def test_cli_train_and_embed(tiny_bank, tmp_path):
    runner = CliRunner()
    model = tmp_path / "m.pt"
    result = runner.invoke(main, ["-q", "train", "--synthetic", "--bank", str(tiny_bank.directory), "--out", str(model),
                                  "--steps", "2", "--batch-size", "2", "--seconds", "4:5", "--eval-every", "2",
                                  "--max-speakers", "2", "--balance-activity", "--related", "0.5",
                                  "--separation", "0.5"])
    assert result.exit_code == 0, result.output
    saved = torch.load(model, weights_only=True)["train"]
    assert saved["balance_activity"] is True and saved["related"] == 0.5 and saved["separation"] == 0.5
    write_corpus(tiny_bank, tmp_path / "c", "heldout", 2, MixerConfig(1, 2, 5, 6), progress=False)
    result = runner.invoke(main, ["embed", str(tmp_path / "c" / "manifest.csv"), "--model", str(model), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert len(payload["sets"]) == 2 and len(payload["sets"][0]["slots"]) == 6
    assert len(payload["sets"][0]["slots"][0]["embedding"]) == 256
    result = runner.invoke(main, ["train", "--out", str(model)])
    assert result.exit_code != 0 and "give --manifest, or --synthetic and/or --voices" in result.output


def test_cli_train_logs_each_validation_when_stderr_is_no_terminal(tiny_bank, tmp_path, caplog):
    train_log = logging.getLogger("weighter.training.train")
    try:  # CliRunner's stderr is no terminal: no progress bar, so each validation is a log line
        result = CliRunner().invoke(main, ["train", "--synthetic", "--bank", str(tiny_bank.directory), "--out",
                                           str(tmp_path / "m.pt"), "--steps", "2", "--batch-size", "2", "--seconds",
                                           "4:5", "--eval-every", "2", "--max-speakers", "2", "--val-files", "5"])
    finally:
        train_log.setLevel(logging.NOTSET)
        logging.getLogger("weighter.training.data").setLevel(logging.NOTSET)
    assert result.exit_code == 0, result.output
    lines = [r.getMessage() for r in caplog.records if r.name == train_log.name and r.getMessage().startswith("step 2: ")]
    assert lines and "'files': 5" in lines[0]  # --val-files conversations scored
    assert "at step 2 of 2; model: " in result.output  # the step whose model was kept


def test_resume_continues_from_the_checkpoint(tiny_bank, tmp_path):
    out = tmp_path / "r.pt"
    cfg = dict(batch_size=2, min_seconds=4, max_seconds=4, eval_every=2, val_files=3, max_speakers=2)
    first = train(out, TrainConfig(steps=2, **cfg), WeighterConfig(**SMALL), bank=tiny_bank, progress=False)
    assert first.steps == 2 and first.best_step == 2
    state = torch.load(out.with_name("r.pt.ckpt"), weights_only=True)
    assert state["step"] == 2
    resumed = train(out, TrainConfig(steps=4, **cfg), WeighterConfig(**SMALL), bank=tiny_bank, resume=True,
                    progress=False)
    assert resumed.steps == 4 and [h["step"] for h in resumed.history] == [4]
    better = resumed.history[0]["map"] > first.best_score  # else the model kept is still step 2's
    assert resumed.best_step == (4 if better else 2)


def test_worker_processes_make_the_same_batches_in_the_same_order(tiny_bank):
    from weighter.training.train import BankBatches, BankClips, step_batches

    cfg = TrainConfig(steps=7, batch_size=2, min_seconds=3, max_seconds=5, max_speakers=2, pretrain_steps=3,
                      pretrain_batch=3, pretrain_seconds=1.0, reverb=0.5, distort=0.5)
    data = BankBatches(tiny_bank, "train", cfg)
    clips = BankClips(tiny_bank, cfg, data.likes)

    def batches(workers: int, start: int) -> list:
        cfg.workers = workers
        return list(step_batches(data, clips, cfg, 10.0, start, torch.device("cpu")))

    def same(a, b) -> bool:  # tensors, lists of them or of speaker indices, None
        if isinstance(a, torch.Tensor):
            return isinstance(b, torch.Tensor) and torch.equal(a, b)
        if isinstance(a, (list, tuple)):
            return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(same, a, b))
        return a == b

    alone = batches(0, 0)
    assert [b[0] for b in alone] == ["clips"] * 3 + ["mix"] * 4
    assert not same(alone[3][1], alone[4][1])
    for workers, start in ((2, 0), (1, 2)):  # from step 0 by two workers; resumed at step 2 by one
        made = batches(workers, start)
        assert len(made) == len(alone) - start and same(made, alone[start:])  # waves, likes, frame truth
    fresh = UtteranceBank(tiny_bank.directory)  # nothing decoded yet: step_batches decodes it before workers fork
    data, clips = BankBatches(fresh, "train", cfg), BankClips(fresh, cfg, data.likes)
    assert same(batches(2, 0), alone)
    assert set(fresh._audio) == set(fresh.identities("train"))  # decoded in this process, shared by the workers


def test_a_batch_a_worker_cannot_make_stops_training_with_its_own_one_line_error(tiny_bank):
    from weighter.training.train import BankBatches, made_batches, step_batches
    from weighter.errors import CorpusError

    class Unreadable(BankBatches):
        def sample(self, rng, frame_rate):
            raise CorpusError("bank/clips/x.flac: unreadable bank clip (truncated)")

    cfg = TrainConfig(steps=3, batch_size=2, min_seconds=3, max_seconds=4, max_speakers=2)
    for workers in (0, 1):
        cfg.workers = workers
        batches = made_batches(step_batches(Unreadable(tiny_bank, "train", cfg), None, cfg, 10.0, 0,
                                            torch.device("cpu")))
        with pytest.raises(CorpusError) as caught:
            next(batches)
        assert str(caught.value) == "bank/clips/x.flac: unreadable bank clip (truncated)"


def test_train_from_a_manifest_of_real_files(tiny_bank, tmp_path):
    write_corpus(tiny_bank, tmp_path / "c", "train", 12, MixerConfig(1, 2, 4, 6), progress=False)
    from weighter.audio import discover

    out = tmp_path / "m.pt"
    result = train(out, TrainConfig(steps=2, batch_size=2, max_seconds=5, eval_every=2),
                   WeighterConfig(**SMALL), sources=discover(tmp_path / "c" / "manifest.csv", require_likes=True),
                   progress=False)
    _, payload = load_model(out)
    assert result.steps == 2 and payload.train["frame_supervision"] == 0.0  # likes only: no frame truth
    assert set(payload.likes) <= set(tiny_bank.identities("train"))
    one = discover(tmp_path / "c" / "manifest.csv", require_likes=True)[:1]  # would all go to validation
    with pytest.raises(WeighterError, match="lists 1 file; training needs at least 2"):
        train(tmp_path / "one.pt", TrainConfig(steps=1), WeighterConfig(**SMALL), sources=one, progress=False)


def test_fine_tuning_starts_from_a_trained_model_with_a_new_head(trained_model, tiny_bank, tmp_path):
    from weighter.audio import discover

    write_corpus(tiny_bank, tmp_path / "c", "validation", 8, MixerConfig(1, 2, 4, 6), progress=False)
    base, base_payload = load_model(trained_model[0])
    out = tmp_path / "tuned.pt"
    train(out, TrainConfig(steps=1, batch_size=2, max_seconds=5, eval_every=1, lr=0.0),  # lr 0: weights stay
          WeighterConfig(slots=3), sources=discover(tmp_path / "c" / "manifest.csv", require_likes=True),
          progress=False, init=trained_model[0])
    tuned, payload = load_model(out)
    assert payload.config["slots"] == base_payload.config["slots"]  # the init's architecture, not slots=3
    assert payload.config["margin"] == base_payload.config["margin"]
    assert set(payload.likes) <= set(tiny_bank.identities("validation"))  # likes never seen by the base
    assert payload.train["init"] == str(trained_model[0])
    for key, value in base.state_dict().items():
        if not key.startswith("like_"):
            assert torch.equal(tuned.state_dict()[key], value), key
    with pytest.raises(WeighterError, match="no such model file"):
        train(tmp_path / "x.pt", TrainConfig(steps=1), WeighterConfig(), sources=discover(tmp_path / "c" / "manifest.csv",
              require_likes=True), progress=False, init=tmp_path / "missing.pt")
    # a larger identity margin replaces the init's, and the identity loss grows with it
    train(tmp_path / "wide.pt", TrainConfig(steps=1, batch_size=2, max_seconds=5, eval_every=1, lr=0.0, margin=0.45),
          WeighterConfig(), sources=discover(tmp_path / "c" / "manifest.csv", require_likes=True), progress=False,
          init=trained_model[0])
    wide, wide_payload = load_model(tmp_path / "wide.pt")
    assert wide_payload.config["margin"] == 0.45 != base_payload.config["margin"]
    emb, who = F.normalize(torch.randn(5, wide.config.embed_dim), dim=1), torch.arange(5) % wide.config.num_likes
    wider = margin_cross_entropy(wide, emb, who)
    wide.config.margin = base_payload.config["margin"]
    assert wider > margin_cross_entropy(wide, emb, who)
    # an input level is recorded in the model and used from then on: the same audio 40 dB quieter embeds alike
    train(tmp_path / "level.pt", TrainConfig(steps=1, batch_size=2, max_seconds=5, eval_every=1, lr=0.0,
                                             input_level=-21.0),
          WeighterConfig(), sources=discover(tmp_path / "c" / "manifest.csv", require_likes=True), progress=False,
          init=trained_model[0])
    level, level_payload = load_model(tmp_path / "level.pt")
    assert level_payload.config["input_level_dbfs"] == -21.0 and "input_level_dbfs" not in base_payload.config
    wave = 0.1 * torch.randn(1, 16000 * 3)
    level.eval()
    with torch.no_grad():
        loud, quiet = level.logmel(wave), level.logmel(wave * 0.01)
    assert torch.allclose(loud, quiet, atol=1e-3)
    with pytest.raises(WeighterError, match="log-mel frontend's level"):
        train(tmp_path / "r.pt", TrainConfig(steps=1, input_level=-21.0), WeighterConfig(frontend="resemblyzer"),
              sources=discover(tmp_path / "c" / "manifest.csv", require_likes=True), progress=False)


def test_fine_tuning_keeps_the_head_rows_of_likes_the_model_knew(trained_model, tiny_bank, tmp_path):
    from weighter.audio import discover

    write_corpus(tiny_bank, tmp_path / "c", "train", 10, MixerConfig(1, 2, 4, 6), progress=False)
    base, base_payload = load_model(trained_model[0])
    out = tmp_path / "tuned.pt"
    train(out, TrainConfig(steps=1, batch_size=2, max_seconds=5, eval_every=1, lr=0.0), WeighterConfig(),
          sources=discover(tmp_path / "c" / "manifest.csv", require_likes=True), progress=False, init=trained_model[0])
    tuned, payload = load_model(out)
    assert payload.likes != base_payload.likes  # a new head ...
    for row, like in enumerate(payload.likes):  # ... whose rows for the base's likes are the base's
        old = base_payload.likes.index(like)
        assert torch.equal(tuned.like_vectors[row], base.like_vectors[old]), like
        assert torch.equal(tuned.like_bias[row], base.like_bias[old]), like


def test_pretraining_on_single_speaker_clips_then_conversations(tiny_bank, tmp_path):
    out = tmp_path / "p.pt"
    cfg = TrainConfig(steps=4, pretrain_steps=2, pretrain_batch=4, pretrain_seconds=1.0, batch_size=2, min_seconds=4,
                      max_seconds=4, eval_every=2, val_files=3, max_speakers=2)
    result = train(out, cfg, WeighterConfig(**SMALL), bank=tiny_bank, progress=False)
    assert [h["step"] for h in result.history] == [4]  # no validation while only the frames are trained
    assert out.exists()


def test_ssl_frontend_loads_a_torchaudio_bundle_from_the_hub_cache(tmp_path, monkeypatch):
    """The "ssl" frontend's loading code, offline: a small randomly initialised WavLM, saved where
    torch.hub keeps downloaded weights, is loaded through torchaudio's own bundle code (no
    download: the file is already cached, as after a user's first run with internet)."""
    import torchaudio
    from torchaudio.pipelines import Wav2Vec2Bundle

    from weighter.errors import WeighterError

    params = dict(torchaudio.pipelines.WAVLM_BASE_PLUS._params, encoder_embed_dim=32, encoder_num_layers=2,
                  encoder_num_heads=2, encoder_ff_interm_features=64, encoder_pos_conv_kernel=16,
                  encoder_pos_conv_groups=4, encoder_num_buckets=32, encoder_max_distance=100,
                  extractor_conv_layer_config=[(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2)
    random = torchaudio.models.wavlm_model(**params).eval()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(random.state_dict(), tmp_path / "hub" / "checkpoints" / "weighter-test-wavlm.pth")
    monkeypatch.setattr(torchaudio.pipelines, "TEST_WAVLM",
                        Wav2Vec2Bundle("weighter-test-wavlm.pth", params, 16000, False, "WavLM"), raising=False)
    cfg = WeighterConfig(frontend="ssl", ssl_bundle="TEST_WAVLM", ssl_layer=1, num_likes=3, **SMALL)
    model = WeighterModel(cfg).eval()
    assert cfg.frame_dim == 32 and not any(k.startswith("frozen") for k in model.state_dict())
    wave = torch.randn(2, 32000)
    lengths = torch.tensor([32000, 20000])
    with torch.no_grad():
        out = model(wave, lengths)
        # the short file alone, up to its last whole 20 ms frame: 61 * 320 + 400 samples
        expected, _ = random.extract_features(wave[1:, :19920], num_layers=1)
    frames = out["frames"]
    assert frames.shape[1] == model.frame_count(torch.tensor(32000)) == 2 * 99  # 50 Hz, twice: the 100 Hz grid
    short = int(out["mask"][1].sum())
    assert short == 2 * expected[-1].shape[1]
    torch.testing.assert_close(frames[1, :short:2], expected[-1][0], atol=1e-4, rtol=1e-4)  # layer 1, unpadded
    assert float(frames[1, short:].abs().sum()) == 0
    assert out["embeddings"].shape == (2, SMALL["slots"], SMALL["embed_dim"])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # as training on a GPU runs it
        assert torch.isfinite(model(wave, lengths)["embeddings"].float()).all()
    path = tmp_path / "ssl.pt"
    save_model(path, model, ["a", "b", "c"], 0.5)
    loaded, _ = load_model(path)  # the frontend reloads from the hub cache
    with torch.no_grad():
        torch.testing.assert_close(loaded(wave, lengths)["embeddings"], out["embeddings"])
    with pytest.raises(WeighterError, match="not a wav2vec2/HuBERT/WavLM bundle"):
        WeighterModel(WeighterConfig(frontend="ssl", ssl_bundle="NO_SUCH_BUNDLE", **SMALL))


def test_resemblyzer_frontend_is_frozen_small_on_disk_and_hears_speakers(tiny_bank, tmp_path):
    pytest.importorskip("resemblyzer")
    model = WeighterModel(WeighterConfig(frontend="resemblyzer", num_likes=3, **{**SMALL, "frame_dim": 256})).eval()
    assert not any(k.startswith(("resemblyzer", "frozen")) for k in model.state_dict())  # stays in its package
    path = tmp_path / "r.pt"
    save_model(path, model, ["a", "b", "c"], 0.5)
    assert path.stat().st_size < 2_000_000
    loaded, _ = load_model(path)
    ids = tiny_bank.identities("train")
    a1, a2 = (torch.from_numpy(c.astype(np.float32) / 32768)[None] for c in tiny_bank.clips(ids[0])[:2])
    b1 = torch.from_numpy(tiny_bank.clips(ids[3])[0].astype(np.float32) / 32768)[None]
    with torch.no_grad():
        fa1, fa2, fb1 = (loaded.frames(w).mean(1)[0] for w in (a1, a2, b1))
        out = loaded(a1)
    same, other = float(F.cosine_similarity(fa1, fa2, 0)), float(F.cosine_similarity(fa1, fb1, 0))
    assert same > other  # pretrained frames: two clips of one voice are closer than two voices
    assert out["embeddings"].shape == (1, 4, 32)


def test_calibrate_records_the_score_share_and_scores_only_keeps_the_rest(trained_model, tiny_bank, tmp_path):
    """calibrate writes the cohort's share with it; --scores-only refits the match calibrations
    at the current share and keeps weights, threshold, merge, split and cohort; a file from
    before the share was recorded normalises at the legacy share."""
    import shutil

    from weighter.training.train import recalibrate
    from weighter.scoring import LEGACY_TOP_SHARE, TOP_SHARE

    path = tmp_path / "m.pt"
    shutil.copy(trained_model[0], path)
    with pytest.raises(WeighterError, match="duration"):  # --seconds reaches the validation conversations
        recalibrate(path, tiny_bank, files=2, seconds=(6, 5))
    recalibrate(path, tiny_bank, files=6)
    payload = torch.load(path, weights_only=True)
    assert payload["calibration_speakers"] == 2  # as many as the model's training mixed
    assert payload["score_top_share"] == TOP_SHARE and Embedder.load(path).score_cohort.share == TOP_SHARE
    del payload["score_top_share"]  # a file calibrated before the share was recorded
    payload["pair_calibration_snorm"] = [9.0, -9.0]  # as fitted at another share
    torch.save(payload, path)
    assert Embedder.load(path).score_cohort.share == LEGACY_TOP_SHARE
    with pytest.raises(WeighterError, match="drop checkpoint, pooling and input_level"):
        recalibrate(path, tiny_bank, files=6, pooling="frames", scores_only=True)
    result = recalibrate(path, tiny_bank, files=6, scores_only=True)
    _, after = load_model(path)
    assert after.score_top_share == TOP_SHARE and result.score_top_share == TOP_SHARE
    assert after.pair_calibration_snorm != [9.0, -9.0]
    for key in ("model_id", "threshold", "merge_cosine", "config"):
        assert getattr(after, key) == payload.get(key), key  # None values are left out of the file
    assert torch.equal(after.score_cohort, payload["score_cohort"])


def test_calibrate_max_speakers_reaches_the_conversations_and_is_recorded(trained_model, tiny_bank, tmp_path):
    """--max-speakers sets how many speakers calibrate's conversations hold (the threshold and
    merge cosine suit the counts they were fitted on) and is recorded; nonsense is refused."""
    import shutil

    from weighter.training.train import recalibrate

    path = tmp_path / "m.pt"
    shutil.copy(trained_model[0], path)
    with pytest.raises(WeighterError, match="^max_speakers 0: .*at least 1 speaker"):
        recalibrate(path, tiny_bank, files=6, max_speakers=0)
    with pytest.raises(WeighterError, match="fewer than max_speakers 40"):  # the mixer sees the value
        recalibrate(path, tiny_bank, files=6, max_speakers=40)
    result = recalibrate(path, tiny_bank, files=6, max_speakers=1)
    _, payload = load_model(path)
    assert result.calibration_speakers == payload.calibration_speakers == 1


def test_an_input_level_makes_log_mel_features_independent_of_the_recording_level():
    """Without one, a recording 60 dB quieter sinks toward the log-mel floor; with one, both are
    scaled to the same RMS first. Unset, the config dict (and so every model id) is unchanged."""
    from weighter.embedder.model import LogMel

    wave = torch.from_numpy(np.random.default_rng(0).normal(0, 0.1, (1, 16000)).astype(np.float32))
    quiet = wave * 10 ** (-60 / 20)
    plain, levelled = LogMel(WeighterConfig()), LogMel(WeighterConfig(input_level_dbfs=-21.0))
    assert (plain(wave) - plain(quiet)).abs().max() > 0.5
    assert (levelled(wave) - levelled(quiet)).abs().max() < 1e-3
    assert "input_level_dbfs" not in WeighterConfig().to_dict()
    assert WeighterConfig.from_dict(WeighterConfig(input_level_dbfs=-21.0).to_dict()).input_level_dbfs == -21.0


def test_bfloat16_encoder_windows_embed_as_float32_ones_do(tiny_bank):
    """The shipped model with its encoder's windows in bfloat16 (CPU autocast) gives a file the
    slots that float32 gives (each confidence within 0.02, each embedding within a cosine of
    0.99), computed otherwise; "auto" is bfloat16 only on a CPU that computes it natively, and
    bad precisions are refused by name."""
    from weighter.cli import _PRECISIONS
    from weighter.embedder.device import PRECISIONS, cpu_has_bfloat16, pick_precision

    assert tuple(_PRECISIONS.choices) == PRECISIONS  # the CLI offers what the library takes

    ids = tiny_bank.identities("train")
    audio = np.concatenate([c.astype(np.float32) / 32768 for i in (0, 3) for c in tiny_bank.clips(ids[i])[:2]])
    e32, e16 = (Embedder.load(device="cpu", precision=p) for p in ("float32", "bfloat16"))
    assert (e32.precision, e16.precision) == ("float32", "bfloat16")
    s32, s16 = e32.embed_audio(audio), e16.embed_audio(audio)
    assert np.abs(s32.confidence - s16.confidence).max() < 0.02
    cos = (s32.embeddings * s16.embeddings).sum(1)
    assert cos.min() > 0.99 and not np.array_equal(s32.embeddings, s16.embeddings)  # it did run in bfloat16
    assert Embedder.load(device="cpu").precision == ("bfloat16" if cpu_has_bfloat16() else "float32")
    assert pick_precision("auto", torch.device("cuda")) == "float32"
    with pytest.raises(WeighterError, match="CPU only"):
        pick_precision("bfloat16", torch.device("cuda"))
    with pytest.raises(WeighterError, match="precision 'half': one of auto, float32, bfloat16"):
        Embedder.load(device="cpu", precision="half")
