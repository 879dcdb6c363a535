"""The vector-simulation harness behind benchmarks/claims.py (issue 6 §4)."""

import numpy as np
import pytest
import torch

from weighter.embedder.model import Weighter, WeighterConfig, weigh
from weighter.research import (Recipe, Setting, ceiling, drop_brief_speakers, kmeans, learned_share, make_files,
                               pools, separated, separated_share, sigma90, smoothed_kmeans, train_vector_weighter,
                               vector_config)


@pytest.mark.parametrize("confidence", ["x", "y_mean", "y_weighted"])
@pytest.mark.parametrize("upsample", ["repeat", "transposed"])
def test_weighter_variants_keep_the_invariants(confidence, upsample):
    torch.manual_seed(0)
    c = WeighterConfig(frame_dim=32, channel_shrink=1, d_model=32, heads=2, ff_dim=32, pos_conv_kernel=5,
                       pos_conv_groups=4, slots=3, confidence=confidence, upsample=upsample)
    weighter = Weighter(c).eval()
    frames = torch.randn(2, 100, 32)
    x, y = weighter(frames, torch.tensor([100, 70]))
    assert x.shape == (2, 3, 100)
    assert (y is None) == (confidence == "x")
    mask = torch.arange(100)[None] < torch.tensor([100, 70])[:, None]
    x, w, conf = weigh(x, y, mask, confidence)
    assert torch.allclose(w.sum(2), torch.ones(2, 3), atol=1e-5)
    assert (w[1, :, 70:] == 0).all()  # padding weighs nothing
    assert ((conf >= 0) & (conf <= 1)).all()
    if confidence == "y_mean":
        assert torch.allclose(conf[1], y[1, :, :70].mean(1), atol=1e-5)
    if confidence == "y_weighted":
        assert torch.allclose(conf, (w * y).sum(2), atol=1e-5)
    if upsample == "repeat":  # piecewise constant over blocks of 15 frames
        assert torch.equal(x[0, :, :15], x[0, :, :1].expand(-1, 15))


def test_separated_needs_every_speaker_matched_one_to_one():
    truth = np.eye(3, 8, dtype=np.float32)
    assert separated(truth * 2 + 0.01, truth)
    assert not separated(truth[:2], truth)  # one speaker has no estimate
    assert not separated(np.stack([truth[0], truth[0], truth[1]]), truth)  # two estimates on one speaker
    assert separated(np.concatenate([truth, np.ones((2, 8))]), truth)  # spare estimates are allowed


def test_brief_speakers_are_dropped_and_their_frames_continue_the_turn():
    labels = np.array([[4, 4, 7, 4, 4, 4, 9, 9, 9, 9], [7, 9, 9, 9, 9, 9, 9, 9, 9, 9]])
    likes = np.zeros((2, 10), bool)
    likes[0, [4, 7, 9]] = likes[1, [7, 9]] = True
    drop_brief_speakers(labels, likes, min_frames=2)
    assert labels.tolist() == [[4, 4, 4, 4, 4, 4, 9, 9, 9, 9], [9] * 10]
    assert np.flatnonzero(likes[0]).tolist() == [4, 9] and np.flatnonzero(likes[1]).tolist() == [9]


def test_time_helps_where_turns_are_long_and_the_ceiling_bounds_everything():
    setting = Setting(frames=600, step=0.01)
    _, test_pool = pools(setting)
    files = make_files(setting, 100, test_pool, seed=3)
    files = files.subset(files.likes.sum(1) >= 2)  # one-speaker files separate trivially
    assert separated_share(files, 0.05, ceiling) == 1.0
    assert separated_share(files, 3.0, ceiling) < 0.5
    # at a noise where single frames overlap, time-blind k-means fails and 15-frame averages do not
    blind, aware, bound = (separated_share(files, 0.8, e) for e in (kmeans, smoothed_kmeans(15), ceiling))
    assert aware >= blind + 0.3
    assert max(blind, aware) <= bound
    value, curve = sigma90(lambda s: separated_share(files, s, ceiling), np.arange(0.2, 3.0, 0.2))
    assert curve[0][1] >= 0.9 and 0.2 <= value < 3.0


def test_the_vector_weighter_learns_from_likes_and_frame_truth():
    setting = Setting(frames=300, step=0.02, pool=20)
    train_pool, _ = pools(setting)
    recipe = Recipe(steps=120, batch=32, sigma_max=0.3, frame_truth=10.0)
    model, info = train_vector_weighter(setting, vector_config(setting, d_model=32, ff_dim=64), recipe, train_pool)
    start_model, _ = train_vector_weighter(setting, vector_config(setting, d_model=32, ff_dim=64),
                                           Recipe(steps=1, batch=32, sigma_max=0.3, frame_truth=10.0), train_pool)
    files = make_files(setting, 120, train_pool, seed=5)
    files = files.subset(files.likes.sum(1) >= 2)
    assert learned_share(model, files, 0.1) > learned_share(start_model, files, 0.1) + 0.2
