import numpy as np
import pytest
import soundfile as sf

from weighter.audio import audio_info, discover, load_audio, read_manifest, scan_audio, stream_audio
from weighter.errors import AudioError, ManifestError, WeighterError

from conftest import tone


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
def test_formats_decode_to_16k_mono(write_tone, ext):
    path = write_tone(f"a.{ext}", seconds=2.0, rate=44100, channels=2)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 32000) < 1200  # mp3 adds encoder padding
    assert 0.1 < np.abs(audio).max() < 0.5


def test_stereo_is_downmixed_by_mean(tmp_path):
    left = tone(1.0, amp=0.4)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    sf.write(str(tmp_path / "s.wav"), stereo, 16000)
    np.testing.assert_allclose(load_audio(tmp_path / "s.wav"), left / 2, atol=1e-4)


def test_streamed_chunks_equal_whole_file_resampling(write_tone):
    path = write_tone("long.wav", seconds=7.3, rate=22050, freq=330)
    whole = np.concatenate(list(stream_audio(path, chunk_seconds=100)))
    chunks = list(stream_audio(path, chunk_seconds=1.0))
    assert len(chunks) == 8
    joined = np.concatenate(chunks)
    assert len(joined) == len(whole) == round(7.3 * 16000)
    assert np.abs(joined - whole).max() < 1e-3


def test_chunk_size_bounds_memory(write_tone):
    path = write_tone("c.wav", seconds=5.0)
    assert max(len(c) for c in stream_audio(path, chunk_seconds=0.5)) == 8000


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("this is not audio at all, just text " * 20), "not readable as audio"),
        (lambda p: sf.write(str(p), np.zeros(0, np.float32), 16000), "zero-length"),
        (lambda p: sf.write(str(p), tone(0.2), 16000), "too short"),
        (lambda p: sf.write(str(p), np.zeros(16000, np.float32), 16000), "all silent"),
    ],
)
def test_bad_input_gets_one_line_reason(tmp_path, make, reason):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError) as caught:
        scan_audio(path, min_seconds=0.5)
    message = str(caught.value)
    assert reason in message and str(path) in message and "\n" not in message


def test_truncated_file_is_an_error_or_shorter_never_a_crash(write_tone):
    path = write_tone("t.wav", seconds=3.0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    try:
        stats = scan_audio(path)
        assert stats.duration < 3.0
    except AudioError as error:
        assert str(path) in str(error)


def test_info_reports_header(write_tone):
    info = audio_info(write_tone("i.wav", seconds=1.5, rate=8000))
    assert (info.sample_rate, info.channels, info.frames) == (8000, 1, 12000)
    assert info.duration == pytest.approx(1.5)


def test_directory_is_searched_recursively(write_tone, tmp_path):
    (tmp_path / "sub").mkdir()
    write_tone("x.wav")
    write_tone("sub/y.flac")
    (tmp_path / "notes.txt").write_text("not audio")
    found = discover(tmp_path)
    assert [s.path.relative_to(tmp_path).as_posix() for s in found] == ["sub/y.flac", "x.wav"]


def test_manifest_paths_are_relative_to_manifest_and_likes_split(write_tone, tmp_path):
    write_tone("a.wav")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,likes\na.wav,alice; bob\n")
    (source,) = read_manifest(manifest)
    assert source.path == tmp_path / "a.wav" and source.likes == ("alice", "bob")


@pytest.mark.parametrize(
    "text, reason",
    [("file,labels\na.wav,x\n", "missing column 'path'"), ("path,likes\n,x\n", "line 2: empty 'path'"),
     ("path,likes\n", "lists no files"), ("", "missing column 'path'")],
)
def test_wrong_manifest_is_named_with_reason(tmp_path, text, reason):
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    with pytest.raises(ManifestError, match=reason):
        read_manifest(manifest)


def test_missing_input_is_an_error(tmp_path):
    with pytest.raises(WeighterError, match="no such file or directory"):
        discover(tmp_path / "nothing")


def test_training_needs_likes(write_tone, tmp_path):
    write_tone("a.wav")
    (tmp_path / "m.csv").write_text("path\na.wav\n")
    with pytest.raises(ManifestError, match="no file carries likes"):
        discover(tmp_path / "m.csv", require_likes=True)
