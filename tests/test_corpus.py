import csv
import json
from collections import defaultdict
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

from weighter.corpus import (BankSpec, ConversationMixer, MixerConfig, UtteranceBank, VectorSimConfig, build_bank,
                             simulate_vectors, switch_rate, write_corpus)
from weighter.corpus.channels import (DISTORTIONS, MP3_COMPRESSION, SOX_CODECS, TELEPHONE_CODECS, clipping, equaliser, mp3,
                                      sox_codec, telephone)
from weighter.corpus.rooms import room_responses
from weighter.corpus.sounds import FAMILIES, nonspeech
from weighter.corpus.bank import check_identities, compact_bank, sounds_like
from weighter.corpus.voices import espeak_data, espeak_split, invent_voices, speak
from weighter.errors import CorpusError


def test_bank_has_identities_in_every_split_and_no_person_crosses_splits(tiny_bank):
    per_split = {s: tiny_bank.identities(s) for s in ("train", "validation", "heldout")}
    assert all(per_split.values())
    persons = {s: {tiny_bank.identity(i)["person"] for i in ids} for s, ids in per_split.items()}
    assert not persons["train"] & persons["heldout"]
    assert not persons["train"] & persons["validation"]
    assert not persons["validation"] & persons["heldout"]
    # every base voice gives three identities, -3 / 0 / +3 semitones
    pitches = defaultdict(set)
    for i in tiny_bank.identities(include_rejected=True):
        pitches[tiny_bank.identity(i)["person"]].add(tiny_bank.identity(i)["pitch"])
    assert all(p == {-3, 0, 3} for p in pitches.values())


def test_bank_clips_are_16k_mono_speech(tiny_bank):
    clips = tiny_bank.clips(tiny_bank.identities("train")[0])
    assert len(clips) == 3
    for clip in clips:
        assert clip.dtype == np.int16 and clip.ndim == 1 and len(clip) > 16000 * 0.8
        assert np.abs(clip).max() > 3000  # normalised to -3 dBFS peak


def test_bank_reports_duplicates_and_distinctness(tiny_bank):
    summary = tiny_bank.summary()
    assert summary["duplicates_dropped"].get("klatt") == "caleb"  # byte-identical espeak-ng variants
    assert summary["check"]["clip_accuracy"] > 0.5


def test_espeak_split_is_stable_and_proportional():
    assert espeak_split("adam") == espeak_split("adam")
    names = [f"voice{i}" for i in range(2000)]
    share = sum(espeak_split(n) == "train" for n in names) / len(names)
    assert 0.65 < share < 0.75


def test_same_spec_builds_identical_bytes(tmp_path):
    spec = BankSpec(engines=("espeak",), max_voices=1, clips_per_identity=2, seed=3)
    a = build_bank(spec, tmp_path / "a", progress=False)
    b = build_bank(spec, tmp_path / "b", progress=False)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "clips").rglob("*.flac"))
    assert len(files) == 6
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert not (tmp_path / "a.partial").exists()
    with pytest.raises(CorpusError, match="already exists"):
        build_bank(spec, tmp_path / "a", progress=False)


def test_invented_voices_are_new_train_speakers_spoken_by_espeak(tmp_path):
    voices = invent_voices(3, seed=1)
    assert voices == invent_voices(3, seed=1) and voices != invent_voices(3, seed=2)
    assert {v.split for v in voices} == {"train"} and len({v.person for v in voices}) == 3
    assert BankSpec().key() == "eb2200ca99a5"  # no invented voices: the default bank keeps its cache key
    spec = BankSpec(engines=("espeak",), max_voices=1, clips_per_identity=2, invented_voices=2)
    bank = build_bank(spec, tmp_path / "b", progress=False)
    invented = [i for i in bank.identities(include_rejected=True) if bank.identity(i).get("variant")]
    assert len(invented) == 6 and all(bank.identity(i)["split"] == "train" for i in invented)
    assert not (tmp_path / "b" / ".espeak").exists()  # the private espeak-ng data is not kept
    # each invented voice speaks with its own variant file, not espeak's default voice
    first = {i: bank.clips(i)[0] for i in invented if i.endswith("+0")}
    installed = next(i for i in bank.identities(include_rejected=True) if i.endswith("+0") and i not in invented)
    spectra = {i: np.abs(np.fft.rfft(c[:8000].astype(np.float32), 1024)) for i, c in first.items()}
    assert len(first) == 2 and not np.allclose(*spectra.values(), rtol=0.2)
    assert bank.meta["spec"]["invented_voices"] == 2 and installed
    from click.testing import CliRunner

    from weighter.cli import main

    shown = CliRunner().invoke(main, ["bank", "--bank", str(tmp_path / "b")])
    assert shown.exit_code == 0 and "train: " in shown.output and " and 2 invented" in shown.output
    assert "espeak-inv000" not in shown.output  # invented persons are counted, not listed


def test_a_probe_bank_holds_only_fresh_validation_speakers_with_their_siblings(tmp_path):
    probes, train = invent_voices(2, seed=0, siblings=2, probe=True), invent_voices(2, seed=0, siblings=2)
    assert [v.name for v in probes] == ["prb000", "prb001", "prb000s", "prb001s"]
    assert {v.split for v in probes} == {"validation"}
    assert not {v.variant.split("\n", 2)[2] for v in probes} & {v.variant.split("\n", 2)[2] for v in train}
    assert BankSpec(probe_voices=1).key() != BankSpec().key()
    with pytest.raises(CorpusError, match="a probe bank holds only its own"):
        build_bank(BankSpec(engines=("espeak",), probe_voices=1, invented_voices=1), tmp_path / "mixed", progress=False)
    bank = build_bank(BankSpec(engines=("espeak",), clips_per_identity=2, probe_voices=1), tmp_path / "p",
                      progress=False)
    assert bank.identities("train") == [] and bank.identities("heldout") == []
    assert sorted(bank.identities("validation")) == sorted(f"espeak-{n}{p:+d}" for n in ("prb000", "prb000s")
                                                           for p in (-3, 0, 3))
    from click.testing import CliRunner

    from weighter.cli import main

    shown = CliRunner().invoke(main, ["bank", "--bank", str(tmp_path / "p")])
    assert shown.exit_code == 0 and "validation: 2 invented" in shown.output
    mixer = ConversationMixer(bank, "validation", MixerConfig(2, 2, 5, 5))
    assert all(len(kin) == 5 for kin in mixer.relatives.values())  # its other pitches and its sibling's three


def test_related_files_hold_two_identities_of_one_person(tiny_bank):
    def shared(related: float) -> list[bool]:  # per file of two heard speakers: are they one person?
        mixer = ConversationMixer(tiny_bank, "train", MixerConfig(2, 2, 12, 12, snr_db=None, related=related))
        convs = [mixer.sample(np.random.default_rng(seed)) for seed in range(30)]
        return [len({tiny_bank.identity(s)["person"] for s in c.likes}) == 1 for c in convs if len(c.likes) == 2]

    assert len(shared(1.0)) >= 20 and all(shared(1.0))
    assert sum(shared(0.0)) < len(shared(0.0)) / 2  # drawn uniformly, a shared person is the exception
    plain = ConversationMixer(tiny_bank, "train", MixerConfig(2, 3, 4, 4))
    assert np.array_equal(plain.sample(np.random.default_rng(1)).audio,
                          ConversationMixer(tiny_bank, "train", MixerConfig(2, 3, 4, 4, related=0.0)).sample(
                              np.random.default_rng(1)).audio)
    with pytest.raises(CorpusError, match="probabilities"):
        MixerConfig(related=1.5)


def test_espeak_finds_200_invented_voices_and_too_many_are_refused_by_name(tmp_path):
    voices = invent_voices(200)
    path = espeak_data(voices, tmp_path / "fits")
    spoken = {speak("espeak", v.name, "one two three", 170, path) for v in (voices[0], voices[-1])}
    assert len(spoken) == 2  # the last one is found too (beyond espeak-ng's list it would fail)
    with pytest.raises(CorpusError, match="300 invented voices do not fit in espeak-ng's voice list"):
        espeak_data(invent_voices(300), tmp_path / "too-many")


def test_source_siblings_keep_tract_and_pitch_and_change_only_the_voice_source(tmp_path):
    plain, with_siblings = invent_voices(4, seed=3), invent_voices(4, seed=3, siblings=2)
    assert with_siblings[:4] == plain  # the invented voices themselves do not change
    siblings = with_siblings[4:]
    assert [v.name for v in siblings] == ["inv000s", "inv001s"] and len({v.person for v in with_siblings}) == 6

    def lines(voice, keys):
        return sorted(x for x in voice.variant.splitlines() if x.startswith(keys))

    for parent, sibling in zip(plain, siblings):
        assert lines(parent, ("pitch", "formant", "consonants")) == lines(sibling, ("pitch", "formant", "consonants"))
        assert lines(parent, ("klatt",)) != lines(sibling, ("klatt",))  # espeak's source counts as no klatt line
    path = espeak_data(with_siblings, tmp_path / "data")
    assert speak("espeak", "inv000", "one two three", 170, path) != speak("espeak", "inv000s", "one two three", 170, path)
    with pytest.raises(CorpusError, match="3 source siblings need at least as many invented voices"):
        invent_voices(2, siblings=3)
    with pytest.raises(CorpusError, match="are counts: got 2 and -1"):
        invent_voices(2, siblings=-1)  # a negative slice would make siblings of all voices but one
    assert BankSpec(invented_voices=100).key() == "95bb062eebe2"  # without siblings the key is kept
    assert BankSpec(invented_voices=100, source_siblings=100).key() != "95bb062eebe2"


def _bank_of_noises(directory, identities):
    """A bank directory of coloured-noise "voices": {id: (split, variant, colour)}; identities with
    the same colour sound alike."""
    entries = []
    for identity, (split, variant, colour) in identities.items():
        clips = []
        for n in range(6):
            noise = np.random.default_rng([n, len(entries)]).normal(size=16000)
            audio = np.convolve(noise, np.ones(colour) / colour, mode="same") * 0.2 * np.sqrt(colour)
            path = directory / "clips" / identity / f"{n:03d}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), audio.astype(np.float32), 16000)
            clips.append({"file": str(path.relative_to(directory)), "duration": 1.0})
        entries.append({"id": identity, "engine": "espeak", "voice": identity, "person": identity, "pitch": 0,
                        "split": split, "clips": clips, **({"variant": "x"} if variant else {})})
    (directory / "bank.json").write_text(json.dumps({"format": 1, "sample_rate": 16000, "identities": entries}))
    return UtteranceBank(directory)


def test_an_invented_voice_like_a_heldout_one_is_rejected_and_installed_verdicts_stay(tmp_path):
    bank = _bank_of_noises(tmp_path, {"a-train": ("train", False, 1), "b-heldout": ("heldout", False, 12),
                                      "c-val": ("validation", False, 40), "inv-copy": ("train", True, 12),
                                      "inv-other": ("train", True, 3)})
    check = check_identities(bank)
    assert set(check["invented_rejected"]) == {"inv-copy"}
    assert check["invented_rejected"]["inv-copy"][0] == "b-heldout"
    assert check["rejected"] == ["inv-copy"]
    alone = _bank_of_noises(tmp_path / "alone", {"a-train": ("train", False, 1), "b-heldout": ("heldout", False, 12),
                                                 "c-val": ("validation", False, 40)})
    assert check_identities(alone)["confused_pairs"] == check["confused_pairs"]


def test_corrupt_bank_index_is_named(tmp_path):
    (tmp_path / "bank.json").write_text("{ not json")
    with pytest.raises(CorpusError, match="corrupt bank index"):
        UtteranceBank(tmp_path)
    with pytest.raises(CorpusError, match="not an utterance bank"):
        UtteranceBank(tmp_path / "elsewhere")


def test_compact_bank_is_a_smaller_bank_of_the_same_voices_and_mixes_like_one(tiny_bank, tmp_path):
    compact = compact_bank(tiny_bank, tmp_path / "compact", ("train",), clips_per_identity=2, progress=False)
    assert compact.identities("train") == tiny_bank.identities("train") and not compact.identities("heldout")
    size = {b: sum(f.stat().st_size for f in (b.directory / "clips").rglob("*.*")
                   if f.parent.name in b.identities("train")) for b in (tiny_bank, compact)}
    assert size[compact] < size[tiny_bank] / 4  # 2 of 3 clips, and a codec far smaller than FLAC
    for identity in compact.identities("train")[:3]:
        coded, clean = compact.clips(identity), tiny_bank.clips(identity)[:2]
        assert len(coded) == 2
        for a, b in zip(coded, clean):  # the same speech, level and length
            assert a.dtype == np.int16 and abs(len(a) - len(b)) < 0.01 * len(b)
            n = min(len(a), len(b))
            assert np.corrcoef(np.abs(a[:n]).astype(float), np.abs(b[:n]).astype(float))[0, 1] > 0.5
            assert 0.5 < np.sqrt(np.mean(a.astype(float) ** 2) / np.mean(b.astype(float) ** 2)) < 2
    conv = ConversationMixer(compact, "train", MixerConfig(2, 3, 10, 10)).sample(np.random.default_rng(0))
    assert set(conv.likes) <= set(compact.identities("train")) and len(conv.audio) == 160000
    with pytest.raises(CorpusError, match="already exists"):
        compact_bank(tiny_bank, tmp_path / "compact", ("train",))
    with pytest.raises(CorpusError, match="unknown split"):
        compact_bank(tiny_bank, tmp_path / "other", ("test",))


def test_sounds_like_finds_copied_voices_and_not_distinct_ones(tiny_bank, tmp_path):
    copy = compact_bank(tiny_bank, tmp_path / "copy", ("validation",), progress=False)  # the same voices, coded
    flagged = sounds_like(copy, tiny_bank, "validation")
    assert set(flagged) == set(copy.identities()) and all(flagged[i][0] == i for i in flagged)
    assert not sounds_like(tiny_bank, tiny_bank, "train", bank_split="heldout")  # distinct persons


def test_preload_decodes_a_split_once_and_shares_the_arrays(tiny_bank):
    bank = UtteranceBank(tiny_bank.directory)
    bank.preload("validation", jobs=2)
    assert set(bank._audio) == set(bank.identities("validation"))
    first = bank._audio[bank.identities("validation")[0]]
    assert bank.clips(bank.identities("validation")[0]) is first  # decoded once, not again


def _corpus(bank, out, seed=0, files=6, split="train", **kw):
    config = MixerConfig(min_duration=8, max_duration=14, telephone=0.5, overlap=0.2, **kw)
    return write_corpus(bank, out, split, files, config, seed=seed, progress=False)


def test_same_seed_same_bytes_other_seed_other_bytes(tiny_bank, tmp_path):
    _corpus(tiny_bank, tmp_path / "a", seed=7)
    _corpus(tiny_bank, tmp_path / "b", seed=7)
    _corpus(tiny_bank, tmp_path / "c", seed=8)
    for name in ("manifest.csv", "reference.rttm", "audio/conv_00000.flac", "audio/conv_00005.flac"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "audio/conv_00000.flac").read_bytes() != (tmp_path / "c" / "audio/conv_00000.flac").read_bytes()


def test_manifest_likes_equal_rttm_speakers_and_come_from_the_split(tiny_bank, tmp_path):
    _corpus(tiny_bank, tmp_path, split="heldout", files=8, max_speakers=3)
    rttm = defaultdict(set)
    for line in (tmp_path / "reference.rttm").read_text().splitlines():
        fields = line.split()
        rttm[fields[1]].add(fields[7])
    heldout = set(tiny_bank.identities("heldout"))
    with open(tmp_path / "manifest.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8
    for row in rows:
        likes = set(row["likes"].split(";"))
        file_id = row["path"].split("/")[-1].removesuffix(".flac")
        assert likes == rttm[file_id]
        assert likes <= heldout
        info = sf.info(str(tmp_path / row["path"]))
        assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
    speakers = json.loads((tmp_path / "speakers.json").read_text())
    assert speakers["split"] == "heldout" and set(speakers["splits"]) == {"train", "validation", "heldout"}


def test_rttm_segments_are_where_each_speakers_audio_is(tiny_bank):
    mixer = ConversationMixer(tiny_bank, "train", MixerConfig(min_duration=15, max_duration=25, snr_db=None))
    rng = np.random.default_rng(11)
    for _ in range(4):
        conv = mixer.sample(rng, keep_sources=True)
        activity = conv.activity(100.0)  # (speakers, frames of 10 ms)
        for row, speaker in enumerate(conv.likes):
            source = conv.sources[speaker]
            frames = np.abs(source[: len(source) // 160 * 160]).reshape(-1, 160).max(1)  # peak per 10 ms
            inside, outside = activity[row, : len(frames)], ~activity[row, : len(frames)]
            assert (frames[outside] < 1e-6).all(), "speaker audible outside its RTTM segments"
            assert (frames[inside] > 1e-4).mean() > 0.7, "RTTM segment mostly silent"
        assert np.allclose(sum(conv.sources.values()), conv.audio, atol=1e-5)  # clean mix = sum of sources


def test_speaker_counts_span_the_configured_range(tiny_bank):
    mixer = ConversationMixer(tiny_bank, "train", MixerConfig(min_speakers=1, max_speakers=4, snr_db=None))
    rng = np.random.default_rng(0)
    counts = [len(mixer.sample(rng).likes) for _ in range(40)]
    assert set(counts) == {1, 2, 3, 4}


def test_turns_last_seconds_not_frames(tiny_bank):
    mixer = ConversationMixer(tiny_bank, "train", MixerConfig(min_speakers=2, max_speakers=2, snr_db=None))
    rng = np.random.default_rng(5)
    turns = []
    for _ in range(15):
        conv = mixer.sample(rng)
        current, start, end = None, 0.0, 0.0
        for seg in conv.segments:
            if seg.speaker != current:
                if current is not None:
                    turns.append(end - start)
                current, start = seg.speaker, seg.start
            end = seg.end
    assert np.median(turns) > 1.5


def test_telephone_channel_removes_high_band(tiny_bank):
    rng = np.random.default_rng(2)
    phone = ConversationMixer(tiny_bank, "train", MixerConfig(telephone=1.0, snr_db=None)).sample(rng)
    spectrum = np.abs(np.fft.rfft(phone.audio)) ** 2
    freqs = np.fft.rfftfreq(len(phone.audio), 1 / 16000)
    assert spectrum[freqs > 4500].sum() < 1e-3 * spectrum.sum()
    assert phone.channel == "telephone"


def test_room_responses_start_with_the_direct_sound_and_decay():
    responses = room_responses(np.random.default_rng(0), 3)
    assert responses.shape == (3, int(0.4 * 16000) + 1)
    assert np.allclose(responses[:, 0], 1.0)  # the direct sound, at amplitude 1
    early, late = (np.sum(responses[:, a:b] ** 2, axis=1) for a, b in ((1, 1601), (4800, 6401)))
    assert np.all(late < 0.1 * early)  # echoes die away
    assert not np.allclose(responses[0], responses[1])  # speakers stand at different places
    assert np.array_equal(responses, room_responses(np.random.default_rng(0), 3))


def test_reverberant_room_smears_each_speaker_and_keeps_the_truth(tiny_bank):
    config = MixerConfig(min_duration=12, max_duration=12, snr_db=None)
    dry = ConversationMixer(tiny_bank, "train", config).sample(np.random.default_rng(4))
    wet = ConversationMixer(tiny_bank, "train", replace(config, reverb=1.0)).sample(np.random.default_rng(4))
    assert wet.reverb and not dry.reverb
    assert wet.likes == dry.likes and wet.segments == dry.segments and len(wet.audio) == len(dry.audio)
    assert np.corrcoef(wet.audio, dry.audio)[0, 1] < 0.95  # not the same signal, nor silence
    assert np.abs(wet.audio).max() <= 0.9 + 1e-6


def test_nonspeech_sounds_cover_every_family_at_unit_level():
    rng = np.random.default_rng(0)
    seen = {}
    for _ in range(40):
        x, family = nonspeech(rng, 3 * 16000)
        assert x.dtype == np.float32 and len(x) == 3 * 16000 and np.isfinite(x).all()
        assert np.mean(x.astype(np.float64) ** 2) == pytest.approx(1.0, rel=1e-3)
        seen.setdefault(family, x)
    assert set(seen) == set(FAMILIES)
    power = np.abs(np.fft.rfft(seen["hum"])) ** 2
    assert power[np.fft.rfftfreq(3 * 16000, 1 / 16000) < 800].sum() > 0.9 * power.sum()  # 50/60 Hz, 12 harmonics at most
    again = [nonspeech(np.random.default_rng(7), 16000)[0] for _ in range(2)]
    assert np.array_equal(*again)


def test_empty_files_hold_no_speaker_and_a_laid_sound_leaves_the_truth_alone(tiny_bank):
    config = MixerConfig(min_duration=12, max_duration=12)
    empty = ConversationMixer(tiny_bank, "train", replace(config, empty=1.0))
    for seed in range(8):
        c = empty.sample(np.random.default_rng(seed), keep_sources=True)
        assert c.likes == () and c.segments == [] and c.sources == {}
        assert c.activity(50).shape == (0, 600) and len(c.audio) == 12 * 16000
        assert 1e-3 < np.abs(c.audio).max() <= 0.9 + 1e-6  # a sound or noise, never an all-silent file
    plain = ConversationMixer(tiny_bank, "train", config).sample(np.random.default_rng(3))
    loud = ConversationMixer(tiny_bank, "train", replace(config, sounds=1.0)).sample(np.random.default_rng(3))
    assert loud.likes == plain.likes and loud.segments == plain.segments  # drawn before the sound
    assert not np.array_equal(loud.audio, plain.audio)
    with pytest.raises(CorpusError, match="probabilities"):
        MixerConfig(empty=1.5)


@pytest.mark.parametrize("name", DISTORTIONS)
def test_distortions_keep_length_and_level_and_change_the_signal(name, tiny_bank):
    speech = ConversationMixer(tiny_bank, "train", MixerConfig(min_duration=5, max_duration=5, snr_db=None)).sample(
        np.random.default_rng(1)).audio.astype(np.float64)
    out = {"mp3": mp3, "clipping": clipping, "equaliser": equaliser}[name](speech, 16000, np.random.default_rng(3))
    assert out.shape == speech.shape and np.abs(out).max() <= 1.0
    assert np.corrcoef(out, speech)[0, 1] > 0.3  # the same speech (an MP3 decoder's delay is removed)...
    assert np.abs(out - speech).max() > 0.01  # ... changed


class _Drawn:
    """A random generator that always draws ``value`` (to reach a range's ends)."""

    def __init__(self, value):
        self.value = value

    def uniform(self, lo, hi):
        return self.value


@pytest.mark.parametrize("level", MP3_COMPRESSION)
def test_mp3_round_trip_works_at_both_ends_of_its_bitrates(level):
    speech = np.convolve(np.random.default_rng(0).normal(size=16000 * 3), np.ones(8) / 8, "same") * 0.2
    out = mp3(speech, 16000, _Drawn(level))
    assert out.shape == speech.shape and np.corrcoef(out, speech)[0, 1] > 0.8  # no delay left (69 ms at 16 kbit/s)


def test_mixer_distortion_is_recorded_and_written(tiny_bank, tmp_path):
    summary = _corpus(tiny_bank, tmp_path, files=6, distort=1.0)
    assert sum(summary["channels"].get(name, 0) for name in DISTORTIONS) == 6
    with pytest.raises(CorpusError, match="probabilities"):
        MixerConfig(reverb=1.5)


def test_mixer_refuses_impossible_requests(tiny_bank):
    with pytest.raises(CorpusError, match="fewer than max_speakers"):
        ConversationMixer(tiny_bank, "heldout", MixerConfig(max_speakers=40))
    with pytest.raises(CorpusError, match="min"):
        MixerConfig(min_speakers=3, max_speakers=2)


def test_vector_simulation_is_consistent():
    config = VectorSimConfig(files=50, pool=20, dim=8, frames=100, noise=0.1, seed=1)
    arrays = simulate_vectors(config)
    assert arrays["frames"].shape == (50, 100, 8)
    for f in range(50):
        assert set(np.flatnonzero(arrays["likes"][f])) == set(np.unique(arrays["labels"][f]))
    residual = arrays["frames"] - arrays["speakers"][arrays["labels"]]
    assert residual.std() == pytest.approx(0.1, rel=0.05)
    assert 0.05 < switch_rate(arrays["labels"]) < 0.5  # the research's recipe switches often
    slow = simulate_vectors(VectorSimConfig(files=50, pool=20, dim=8, frames=100, step=0.01, seed=1))
    assert switch_rate(slow["labels"]) < switch_rate(arrays["labels"]) / 3
    again = simulate_vectors(config)
    assert np.array_equal(again["frames"], arrays["frames"])


@pytest.mark.parametrize("codec", sorted(SOX_CODECS))
def test_sox_codecs_round_trip_a_voiced_sound_at_its_length(codec):
    from scipy.signal import welch

    rate = 16000 if codec == "vorbis" else 8000
    t = np.arange(rate * 2) / rate  # a vowel-like sound: 150 Hz and its harmonics, its level swelling at 3 Hz
    x = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 20)) * (0.5 + 0.4 * np.sin(2 * np.pi * 3 * t)) * 0.1
    out = sox_codec(x, rate, codec)
    assert out.shape == x.shape and out.dtype == np.float32
    assert np.abs(out - x).max() > 1e-4  # coded: not the same samples...
    freqs, _ = welch(x, rate, nperseg=512)
    bands = np.digitize(freqs, np.linspace(100, 2800, 21))  # 20 bands of 135 Hz, each holding a harmonic
    spectra = [np.log10(np.bincount(bands, welch(s, rate, nperseg=512)[1])[1:21] + 1e-12) for s in (x, out)]
    assert np.corrcoef(*spectra)[0, 1] > 0.9  # ... but the same sound (a CELP codec keeps spectra, not waveforms)
    if codec not in ("amr-nb",):
        assert np.corrcoef(out, x)[0, 1] > 0.9  # waveform coders, realigned where the decoder delays


def test_sox_codec_errors_name_the_codec():
    with pytest.raises(CorpusError, match="codec 'opus': unknown"):
        sox_codec(np.zeros(800), 8000, "opus")
    with pytest.raises(CorpusError, match="codec gsm: sox failed .*banana"):
        sox_codec(np.zeros(1600), 8000, "gsm", ("-C", "banana"))


@pytest.mark.parametrize("codec", TELEPHONE_CODECS)
def test_telephone_codecs_keep_the_band_and_length(codec):
    x = np.random.default_rng(1).normal(size=16000 * 2) * 0.1
    out = telephone(x, 16000, codec)
    spectrum = np.abs(np.fft.rfft(out)) ** 2
    freqs = np.fft.rfftfreq(len(out), 1 / 16000)
    assert out.shape == x.shape
    assert spectrum[freqs > 4200].sum() < 0.01 * spectrum.sum()  # 8 kHz sampling: nothing above 4 kHz
    assert spectrum[(freqs > 500) & (freqs < 3000)].sum() > 0.5 * spectrum.sum()


def test_recording_channel_is_drawn_per_file_seeded_and_recorded(tiny_bank, tmp_path):
    config = MixerConfig(1, 2, 8, 8, channel=1.0)
    mixer = ConversationMixer(tiny_bank, "train", config)
    first, again = (mixer.sample(np.random.default_rng(5)) for _ in range(2))
    assert np.array_equal(first.audio, again.audio)  # the same seed, the same channel
    plain = ConversationMixer(tiny_bank, "train", MixerConfig(1, 2, 8, 8, snr_db=None)).sample(np.random.default_rng(5))
    assert plain.likes == first.likes  # speakers and turns are drawn before the channel
    kinds, channels = set(), set()
    for seed in range(24):
        c = mixer.sample(np.random.default_rng(seed))
        kinds.add(c.noise)
        channels.add(c.channel)
        assert c.snr_db is not None and 5 <= c.snr_db <= 30 and np.abs(c.audio).max() <= 0.9 + 1e-6
    assert kinds == {"coloured", "sound", "babble"}
    assert "microphone" in channels and {c for c in channels if c.startswith("telephone-")}
    summary = _corpus(tiny_bank, tmp_path, files=4, channel=1.0)
    assert sum(v for k, v in summary["channels"].items() if k == "microphone" or k.startswith("telephone-")) == 4
    with pytest.raises(CorpusError, match="probabilities"):
        MixerConfig(channel=1.5)


def test_a_channel_off_leaves_old_corpora_unchanged(tiny_bank):
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    a = ConversationMixer(tiny_bank, "train", MixerConfig(1, 2, 6, 6)).sample(rng_a)
    b = ConversationMixer(tiny_bank, "train", MixerConfig(1, 2, 6, 6, channel=0.0)).sample(rng_b)
    assert np.array_equal(a.audio, b.audio) and a.noise is None
