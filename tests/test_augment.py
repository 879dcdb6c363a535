"""The training channel augmenter (weighter.training.augment): seeded, and each stage does what it says."""

from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

from weighter.errors import WeighterError
from weighter.training.augment import AugmentConfig, ChannelAugmenter

RATE = 16000
NONE = AugmentConfig(clean=0.0, room=0.0, noise=0.0, microphone=0.0, codec=0.0, level_db=(-6.0, -6.0),
                     simulated_rooms=4)


def voiced(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """A vowel-like test sound: 120-180 Hz and 25 harmonics, its level swelling at 2-4 Hz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = rng.uniform(120, 180)
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 26))
    return (x * (0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(2, 4) * t)) * 0.1).astype(np.float32)


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    """A material folder as ../shared/real-material lays it out: one recorded noise, one room."""
    root = tmp_path_factory.mktemp("material")
    (root / "noise" / "street").mkdir(parents=True)
    (root / "rir" / "hall").mkdir(parents=True)
    rng = np.random.default_rng(0)
    sf.write(root / "noise" / "street" / "a.flac", (rng.normal(size=RATE * 4) * 0.05).astype(np.float32), RATE)
    decay = np.exp(-np.arange(RATE // 2) / (0.08 * RATE)) * rng.normal(size=RATE // 2)
    response = np.concatenate([np.zeros(40), [1.0], 0.3 * decay]).astype(np.float32)  # 2.5 ms of flight first
    sf.write(root / "rir" / "hall" / "r.flac", response * 0.5, RATE)
    return root


def augmenter(material, **stages) -> ChannelAugmenter:
    return ChannelAugmenter(material, babble=[voiced(4.0, seed=s) for s in range(1, 5)], config=replace(NONE, **stages))


def test_same_generator_same_channel_other_generator_other_channel(material):
    aug = ChannelAugmenter(material, babble=[voiced(4.0, seed=1)], config=AugmentConfig(clean=0.0, simulated_rooms=4))
    x = voiced()
    a, stages_a = aug(x, np.random.default_rng(3))
    b, stages_b = aug(x, np.random.default_rng(3))
    assert np.array_equal(a, b) and stages_a == stages_b
    others = [aug(x, np.random.default_rng(s))[0] for s in range(4, 8)]
    assert not any(np.array_equal(a, o) for o in others)
    assert a.shape == x.shape and a.dtype == np.float32 and np.abs(a).max() <= 1.0


def test_the_clean_share_returns_the_input_untouched(material):
    x = voiced()
    out, stages = augmenter(material, clean=1.0)(x, np.random.default_rng(0))
    assert stages == ["clean"] and np.array_equal(out, x)


def test_a_room_adds_a_decaying_tail_and_keeps_the_direct_sound_in_place(material):
    for measured in (1.0, 0.0):
        aug = augmenter(material, room=1.0, measured_rooms=measured)
        click = np.zeros(RATE, np.float32)
        click[1000] = 0.5
        out, stages = aug(click, np.random.default_rng(1))
        assert stages == ["room:" + ("measured" if measured else "simulated")]
        loud = np.abs(out) >= 0.5 * np.abs(out).max()
        assert int(np.argmax(loud)) == 1000  # the direct sound is where it was: no delay...
        assert np.abs(out[:1000]).max() < 1e-6  # ... and nothing before it
        tail = np.abs(out[1100:1100 + RATE // 4])
        assert tail.max() > 1e-3 * np.abs(out).max()  # echoes after the direct sound


@pytest.mark.parametrize("babble", [0.0, 1.0])
def test_noise_is_added_at_the_drawn_snr(material, babble):
    aug = augmenter(material, noise=1.0, snr_db=(10.0, 10.0), babble=babble)
    x = voiced()
    out, stages = aug(x, np.random.default_rng(2))
    assert stages == ["noise:" + ("babble" if babble else "recorded")]
    gain = np.dot(out, x) / np.dot(x, x)  # the level stage scales speech and noise alike
    noise = out - gain * x
    snr = 10 * np.log10(np.sum((gain * x) ** 2) / np.sum(noise ** 2))
    assert snr == pytest.approx(10.0, abs=0.5)


def test_the_microphone_colours_the_spectrum_but_keeps_the_sound(material):
    aug = augmenter(material, microphone=1.0)
    x = voiced()

    def envelope(s):  # RMS per 20 ms
        return np.sqrt((s[: len(s) // 320 * 320].reshape(-1, 320) ** 2).mean(1))

    def profile(s):  # dB per 500-Hz band
        power = np.abs(np.fft.rfft(s)) ** 2
        return 10 * np.log10(np.bincount(np.fft.rfftfreq(len(s), 1 / RATE).astype(int) // 500, power)[:16] + 1e-12)

    colour = []
    for seed in range(5):
        out, stages = aug(x, np.random.default_rng(seed))
        assert stages == ["microphone"]
        assert np.corrcoef(envelope(out), envelope(x))[0, 1] > 0.8  # the same sound over time
        shift = profile(out) - profile(x)
        colour.append(np.ptp(shift - np.median(shift)))  # how unevenly the bands moved, in dB
    assert max(colour) > 6.0  # a colour, not just a gain


def test_codecs_band_limit_or_code_the_signal(material):
    x = voiced()
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    narrow = augmenter(material, codec=1.0, narrowband=1.0)
    seen = set()
    for seed in range(12):
        out, stages = narrow(x, np.random.default_rng(seed))
        seen.add(stages[0])
        spectrum = np.abs(np.fft.rfft(out)) ** 2
        assert spectrum[freqs > 4100].sum() < 0.01 * spectrum.sum()  # an 8 kHz line
    assert len(seen) >= 3 and all(s.startswith("codec:") for s in seen)
    wide, stages = augmenter(material, codec=1.0, narrowband=0.0)(x, np.random.default_rng(0))
    assert stages[0] in ("codec:mp3", "codec:vorbis") and wide.shape == x.shape
    assert np.abs(wide / np.abs(wide).max() - x / np.abs(x).max()).max() > 1e-3


def test_without_material_it_warns_and_uses_simulated_rooms_and_babble(tmp_path, caplog):
    aug = ChannelAugmenter(tmp_path / "absent", babble=[voiced(4.0, 1)],
                           config=replace(NONE, room=1.0, noise=1.0, measured_rooms=1.0))
    assert "no such folder" in caplog.text
    _, stages = aug(voiced(), np.random.default_rng(0))
    assert stages[:2] == ["room:simulated", "noise:babble"]


def test_a_recording_at_another_rate_is_one_line_error(tmp_path):
    (tmp_path / "noise" / "x").mkdir(parents=True)
    (tmp_path / "rir" / "y").mkdir(parents=True)
    sf.write(tmp_path / "rir" / "y" / "r.flac", np.ones(100, np.float32) * 0.1, 44100)
    with pytest.raises(WeighterError, match=r"r\.flac: sample rate 44100 Hz, the augmenter needs 16000 Hz"):
        ChannelAugmenter(tmp_path)


def test_a_channel_mixer_augments_its_share_and_leaves_the_rest_to_the_mixer(tiny_bank, material):
    from weighter.corpus import ConversationMixer, MixerConfig
    from weighter.training.augment import ChannelMixer

    config = MixerConfig(1, 2, 5, 8, telephone=1.0)
    plain = ConversationMixer(tiny_bank, "train", config).sample(np.random.default_rng(0))
    none = ChannelMixer(tiny_bank, "train", config, None, 0.0).sample(np.random.default_rng(0))
    np.testing.assert_array_equal(none.audio, plain.audio)  # no share: the mixer as it stands
    with pytest.raises(WeighterError, match="ChannelAugmenter"):
        ChannelMixer(tiny_bank, "train", config, None, 0.5)
    channel = augmenter(material, level_db=(-20.0, -20.0))
    heard = ChannelMixer(tiny_bank, "train", config, channel, 1.0)
    a, b = heard.sample(np.random.default_rng(1)), heard.sample(np.random.default_rng(1))
    np.testing.assert_array_equal(a.audio, b.audio)  # seeded
    rng = np.random.default_rng(1)
    rng.random()  # the share's draw
    dry = heard.dry.sample(rng)  # the same conversation, before the channel
    assert dry.channel != "telephone" and a.likes == dry.likes  # mixed dry: the channel replaces the band
    assert a.audio.shape == dry.audio.shape and not np.allclose(a.audio, dry.audio)
