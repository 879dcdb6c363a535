import numpy as np

from weighter.embedder.slots import split_mixed

DIM = 16


def _case(slot0_mass, rng, noise=0.05, voices=(0, 1, 2)):
    """30 windows of 10 frames, back to back (300 frames): windows 0-9 hold voice a, 10-19
    voice b, 20-29 voice c (``voices`` picks the basis direction of each). Slot 0's mass in
    each window is ``slot0_mass`` (30,); slot 1 weighs only voice c's windows."""
    basis = np.eye(DIM, dtype=np.float32)
    w = np.concatenate([basis[v] + rng.normal(0, noise, (10, DIM)) for v in voices])
    windows = (w / np.linalg.norm(w, axis=1, keepdims=True)).astype(np.float32)
    mass = np.stack([slot0_mass, np.r_[np.zeros(20), np.full(10, 0.1)]]).astype(np.float32)
    starts = np.arange(30) * 10
    x = np.full((2, 300), 0.8, np.float32)
    emb = np.stack([(basis[0] + basis[1]) / np.sqrt(2), basis[2]]).astype(np.float32)
    return emb, np.array([0.9, 0.4], np.float32), x, windows, mass, starts, starts + 10


def test_a_slot_over_two_voices_becomes_two_slots():
    rng = np.random.default_rng(0)
    emb, conf, x, windows, mass, starts, ends = _case(np.r_[np.full(20, 0.05), np.zeros(10)], rng)
    out_e, out_c, out_x = split_mixed(emb, conf, x, windows, mass, starts, ends, split_cosine=0.5, min_share=0.25)
    assert out_c.tolist() == [conf[0], conf[0], conf[1]]  # the halves take the slot's place and confidence
    a, b = (0, 1) if out_e[0][0] > out_e[1][0] else (1, 0)
    assert out_e[a][0] > 0.99 and out_e[b][1] > 0.99  # one half per voice, embedded from its own windows
    np.testing.assert_allclose(out_x[a][:100], 0.8, atol=1e-6)  # voice a's frames go to its half
    np.testing.assert_allclose(out_x[a][100:], 0.0, atol=1e-6)
    np.testing.assert_allclose(out_x[a][:200] + out_x[b][:200], x[0][:200], atol=1e-6)  # shared, not invented
    np.testing.assert_array_equal(out_e[2], emb[1])
    np.testing.assert_array_equal(out_x[2], x[1])


def test_one_voice_a_minor_second_voice_or_no_setting_keep_the_slot_whole():
    rng = np.random.default_rng(1)
    two = np.r_[np.full(20, 0.05), np.zeros(10)]
    emb, conf, x, windows, mass, starts, ends = _case(two, rng, voices=(0, 0, 2))  # a and b: one voice
    assert len(split_mixed(emb, conf, x, windows, mass, starts, ends, 0.5, 0.25)[1]) == 2
    emb, conf, x, windows, mass, starts, ends = _case(two, rng)
    out = split_mixed(emb, conf, x, windows, mass, starts, ends, split_cosine=None, min_share=0.25)
    assert out[0] is emb and out[2] is x
    minor = np.r_[np.full(10, 0.09), np.full(10, 0.01), np.zeros(10)]  # voice b: 10% of the slot's mass
    emb, conf, x, windows, mass, starts, ends = _case(minor, rng)
    assert len(split_mixed(emb, conf, x, windows, mass, starts, ends, 0.5, 0.25)[1]) == 2
    assert len(split_mixed(emb, conf, x, windows, mass, starts, ends, 0.5, 0.05)[1]) == 3
    # two groups, but alike (cosine above the setting): one voice heard in two conditions
    emb, conf, x, windows, mass, starts, ends = _case(two, rng)
    assert len(split_mixed(emb, conf, x, windows, mass, starts, ends, split_cosine=-0.5, min_share=0.25)[1]) == 2
