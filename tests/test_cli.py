import json

import numpy as np
import soundfile as sf
from click.testing import CliRunner

from weighter import __version__
from weighter.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_version_and_help_on_every_command():
    assert __version__ in run("--version").output
    top = run("--help")
    assert top.exit_code == 0
    for command in main.commands:
        result = run(command, "--help")
        assert result.exit_code == 0 and "Usage" in result.output, command


def test_synth_writes_a_corpus_that_scan_reads(tiny_bank, tmp_path):
    out = tmp_path / "corpus"
    result = run("synth", out, "--bank", tiny_bank.directory, "--files", 3, "--split", "train",
                 "--min-duration", 5, "--max-duration", 8)
    assert result.exit_code == 0, result.output
    assert "wrote 3 files" in result.output
    scanned = run("scan", out / "manifest.csv", "--json")
    assert scanned.exit_code == 0
    report = json.loads(scanned.stdout)
    assert len(report["files"]) == 3 and not report["failed"]
    assert all(f["likes"] and 5 <= f["duration"] <= 8.01 for f in report["files"])
    again = run("synth", out, "--bank", tiny_bank.directory, "--files", 3)
    assert again.exit_code == 1 and "already holds a corpus" in again.output


def test_synth_empty_files_have_no_likes_and_no_rttm_lines_yet_sound(tiny_bank, tmp_path):
    out = tmp_path / "corpus"
    result = run("-q", "synth", out, "--bank", tiny_bank.directory, "--files", 6, "--split", "train", "--empty", 0.5,
                 "--min-duration", 5, "--max-duration", 8)
    assert result.exit_code == 0, result.output
    report = json.loads(run("scan", out / "manifest.csv", "--json").stdout)
    assert not report["failed"] and len(report["files"]) == 6  # no file all silent
    empty = {f["path"].rsplit("/", 1)[-1].removesuffix(".flac") for f in report["files"] if not f["likes"]}
    assert 0 < len(empty) < 6
    assert not empty & {line.split()[1] for line in (out / "reference.rttm").read_text().splitlines()}
    assert json.loads(result.stdout)["mixer"]["empty"] == 0.5


def test_scan_goes_on_after_bad_files_and_exits_nonzero(tmp_path):
    sf.write(str(tmp_path / "good.wav"), 0.1 * np.sin(np.arange(16000) / 5.0).astype(np.float32), 16000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF garbage")
    sf.write(str(tmp_path / "silent.flac"), np.zeros(16000, np.float32), 16000)
    result = run("scan", tmp_path)
    assert result.exit_code == 1
    assert "1 files ok" in result.output and "2 failed" in result.output
    assert "bad.wav: not readable as audio" in result.output and "silent.flac: all silent" in result.output


def test_errors_are_one_line_with_nonzero_exit(tmp_path):
    result = run("scan", tmp_path / "missing")
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {tmp_path / 'missing'}: no such file or directory"


def test_vectors_mode(tmp_path):
    result = run("synth", tmp_path / "v", "--vectors", "--files", 20, "--pool", 10, "--frames", 50)
    assert result.exit_code == 0
    arrays = np.load(tmp_path / "v" / "vectors.npz")
    assert arrays["frames"].shape == (20, 50, 32)


def test_range_options_name_the_option_and_the_form(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["synth", str(tmp_path / "c"), "--snr", "10-30"])
    assert result.exit_code == 2 and "'--snr': expected 'LO:HI' or 'none', got '10-30'" in result.output
    result = runner.invoke(main, ["train", "--synthetic", "--out", str(tmp_path / "m.pt"), "--seconds", "8"])
    assert result.exit_code == 2 and "'--seconds': expected 'LO:HI', got '8'" in result.output
    assert not (tmp_path / "c").exists()


def test_quiet_and_verbose_are_taken_after_the_sub_command_too(tmp_path):
    import logging

    sf.write(str(tmp_path / "good.wav"), 0.1 * np.sin(np.arange(16000) / 5.0).astype(np.float32), 16000)
    loud = run("scan", tmp_path)
    assert loud.exit_code == 0 and "good.wav" in loud.stdout
    for args in (("-q", "scan", tmp_path), ("scan", tmp_path, "-q"), ("scan", "--quiet", tmp_path)):
        quiet = run(*args)
        assert quiet.exit_code == 0 and quiet.stdout == "", args  # no per-file lines
        assert "1 files ok" in quiet.stderr
    assert run("scan", tmp_path, "-vv").exit_code == 0 and logging.getLogger().level == logging.DEBUG
    assert run("-v", "scan", tmp_path, "-v").exit_code == 0 and logging.getLogger().level == logging.DEBUG  # they add
    assert run("-v", "scan", tmp_path).exit_code == 0 and logging.getLogger().level == logging.INFO
    store = tmp_path / "s"
    run("index", "info", "--store", store)  # not a store: an error, but -q is an option of every command
    for command in (["index", "add", tmp_path, "--store", store, "-q"], ["index", "info", "--store", store, "-v"],
                    ["query", tmp_path / "good.wav", "--store", store, "-q"], ["cluster", "--store", store, "-q"]):
        result = run(*command)
        assert "No such option" not in result.output and "not a weighter store" in result.output, command
    logging.getLogger().setLevel(logging.WARNING)


def _library_defaults(command, prefix=()):
    """(command path, option) for every option whose default the library holds."""
    import click

    from weighter.cli import _LibraryDefault

    if isinstance(command, click.Group):
        return [found for name, sub in command.commands.items() for found in _library_defaults(sub, prefix + (name,))]
    return [(prefix, p) for p in command.params if isinstance(p.default, _LibraryDefault)]


def test_cli_defaults_are_read_from_the_library(monkeypatch):
    import click

    from weighter.cluster import SlotClusterer
    from weighter.training.config import TrainConfig

    found = _library_defaults(main)
    ctx = click.Context(main)
    assert {path for path, _ in found} >= {("train",), ("cluster",), ("query",), ("embed",), ("bank",)}
    for path, option in found:  # each names a real field or parameter, of the option's type
        value = option.get_default(ctx)
        assert value is not None and option.type(value) == value, (path, option.name)
    assert dict((o.name, o.get_default(ctx)) for p, o in found if p == ("cluster",))["pca_dims"] == \
        SlotClusterer().pca_dims
    monkeypatch.setattr(TrainConfig, "steps", 1234)  # one source: the CLI follows the library
    ctx = main.commands["train"].make_context("train", ["--synthetic", "--out", "m.pt"])
    assert ctx.params["steps"] == 1234 and ctx.params["lr"] == TrainConfig.lr
    assert "[default: 1234]" in CliRunner().invoke(main, ["train", "--help"], terminal_width=200).output
