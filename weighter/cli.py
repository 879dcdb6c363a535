"""The ``weighter`` command. Commands parse, call the library and print; no logic lives here."""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import sys
from pathlib import Path

import click

from weighter import __version__
from weighter.errors import WeighterError

log = logging.getLogger("weighter")


class _LibraryDefault:
    """An option's default read from the library (``"module:Class.field"`` or
    ``"module:function(parameter)"``), its one source; imported only when the command runs or
    shows its help."""

    def __init__(self, source: str):
        self.source = source

    def __call__(self):
        module, _, path = self.source.partition(":")
        name, _, parameter = path.partition("(")
        value = importlib.import_module(module)
        for part in name.split("."):
            value = getattr(value, part)
        return inspect.signature(value).parameters[parameter.rstrip(")")].default if parameter else value


class _Option(click.Option):
    """Shows a library default's value in --help (click would show "(dynamic)")."""

    def get_default(self, ctx, call=True):
        value = super().get_default(ctx, call=False)
        if isinstance(value, _LibraryDefault):
            return value()
        return value() if call and callable(value) else value


_TRAIN = "weighter.training.config:TrainConfig."  # where the defaults of these options live
_MODEL_CFG = "weighter.embedder.model:WeighterConfig."
_BANK = "weighter.corpus.bank:BankSpec."
_CLUSTERER = "weighter.cluster.clusterer:SlotClusterer("


def _library(source: str) -> dict:
    """``click.option`` keywords for a default whose one source is the library."""
    return {"cls": _Option, "default": _LibraryDefault(source), "show_default": True}


def _verbosity_options() -> list[click.Option]:
    """-v and -q: taken by the top-level command and, the same, by every sub-command."""
    return [click.Option(["-v", "--verbose"], count=True, help="More detail on stderr (-vv for debug)."),
            click.Option(["-q", "--quiet"], is_flag=True, help="No progress bars or info; errors only.")]


def _set_verbosity(obj: dict, verbose: int, quiet: bool) -> None:
    """Logging level and progress bars from -v / -q, kept in ``ctx.obj`` for the commands."""
    level = logging.ERROR if quiet else [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(level)  # also when given again after the sub-command
    obj.update(verbose=verbose, quiet=quiet, progress=not quiet and sys.stderr.isatty() or verbose > 0)


class _Command(click.Command):
    """Every leaf command: also takes -v / -q after its name (``weighter index add DIR --store S
    -q``); they add to the ones given before the sub-command."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params += _verbosity_options()

    def invoke(self, ctx):
        verbose, quiet = ctx.params.pop("verbose", 0), ctx.params.pop("quiet", False)
        obj = ctx.ensure_object(dict)
        if verbose or quiet or "progress" not in obj:
            _set_verbosity(obj, obj.get("verbose", 0) + verbose, obj.get("quiet", False) or quiet)
        return super().invoke(ctx)


class _Group(click.Group):
    """Turns any WeighterError into one line on stderr and exit code 1 (with the error's
    command-line hint, where it has one). Its commands are ``_Command``s."""

    command_class = _Command

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except WeighterError as error:
            hint = getattr(error, "cli_hint", None)
            click.echo(f"error: {error}" + (f"; on the command line: {hint}" if hint else ""), err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, params=_verbosity_options(), context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="weighter")
@click.pass_context
def main(ctx, verbose, quiet):
    """Index, query and cluster a corpus of recordings by who (or what) is heard in them.

    \b
    Typical use:
      weighter synth corpus --files 50                     # a labelled synthetic corpus (or your audio)
      weighter index build corpus/audio --store s          # embed every file into a store
      weighter query corpus/audio/conv_00001.flac --store s    # files sharing a speaker, and where
      weighter cluster --store s --map groups.png          # speakers discovered across the corpus
      weighter evaluate --store s --manifest corpus/manifest.csv --rttm corpus/reference.rttm
    """
    ctx.obj = {}
    _set_verbosity(ctx.obj, verbose, quiet)


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--min-seconds", default=0.5, show_default=True, help="Shorter files are reported as too short.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout: files and failures.")
@click.pass_obj
def scan(obj, inputs, min_seconds, as_json):
    """Decode every file of INPUTS (files, directories, file lists, manifest CSVs) and report it.

    Each file is read once, in chunks, at 16 kHz mono, exactly as the embedder will read it.
    Unusable files (unreadable, not audio, empty, too short, silent) get one line each; the
    rest go on. Exit code 1 when any file failed.
    """
    from tqdm import tqdm

    from weighter.audio import discover, scan_audio
    from weighter.errors import AudioError

    sources = [s for target in inputs for s in discover(target)]
    ok, failed = [], []
    for source in tqdm(sources, desc="scanning", unit="file", disable=not obj["progress"]):
        try:
            stats = scan_audio(source.path, min_seconds=min_seconds)
            ok.append({"path": str(source.path), "duration": round(stats.duration, 3),
                       "sample_rate": stats.sample_rate, "channels": stats.channels,
                       "peak": round(stats.peak, 4), "rms_db": round(stats.rms_db, 1), "likes": list(source.likes)})
        except AudioError as error:
            failed.append({"path": error.path, "reason": error.reason})
            if not as_json:
                click.echo(f"error: {error}", err=True)
    total = sum(f["duration"] for f in ok)
    if as_json:
        click.echo(json.dumps({"files": ok, "failed": failed, "total_seconds": round(total, 3)}, indent=1))
    elif not obj["quiet"]:
        for f in ok:
            likes = ";".join(f["likes"])
            click.echo(f"{f['path']}\t{f['duration']:8.2f} s\t{f['sample_rate']} Hz x{f['channels']}"
                       f"\t{f['rms_db']:6.1f} dBFS\t{likes}")
    click.echo(f"{len(ok)} files ok ({total / 60:.1f} min of audio), {len(failed)} failed", err=True)
    sys.exit(1 if failed else 0)


_BANK_OPTIONS = [
    click.option("--bank", "bank_dir", type=click.Path(path_type=Path), default=None,
                 help="Utterance bank directory (built there if missing). Default: a cache under "
                      "$WEIGHTER_CACHE or ~/.cache/weighter, keyed by the bank options."),
    click.option("--engines", default="espeak,flite", show_default=True,
                 help="TTS engines for the bank, comma-separated (espeak, flite)."),
    click.option("--max-voices", "max_voices", type=int, default=None,
                 help="Cap on base voices (each gives 3 identities at -3/0/+3 semitones). Default: all."),
    click.option("--clips", "clips_per_identity", type=int, **_library(_BANK + "clips_per_identity"),
                 help="Clips per identity in the bank."),
    click.option("--bank-seed", type=int, default=0, show_default=True, help="Seed of the bank's texts and variation."),
    click.option("--invented-voices", type=int, **_library(_BANK + "invented_voices"),
                 help="Add this many invented espeak-ng speakers (random variant files: vocal tract, pitch, voice "
                      "source) to the train split, 3 identities each; validation and held-out stay as they are."),
    click.option("--source-siblings", type=int, **_library(_BANK + "source_siblings"),
                 help="Give the first this many invented speakers a sibling each: another person with the same "
                      "vocal tract and pitch but another voice source (teaches that the source matters too)."),
    click.option("--probe-voices", type=int, **_library(_BANK + "probe_voices"),
                 help="Instead of every other voice: this many fresh invented espeak-ng speakers, each with a "
                      "source sibling, all in the validation split (a probe bank: voices no model was chosen on, "
                      "near-identical pairs included). E.g. weighter bank --engines espeak --probe-voices 12."),
    click.option("--jobs", type=int, default=2, show_default=True, help="Parallel TTS processes."),
]


def _options(options: list):
    """A decorator that adds ``options`` (click.option decorators) in their order in --help."""
    def add(func):
        for option in reversed(options):
            func = option(func)
        return func
    return add


_bank_options = _options(_BANK_OPTIONS)


def _span(value: str, off: str | None = None) -> tuple[float, float] | None:
    """An option's 'LO:HI' range as floats; None for ``off`` (e.g. --snr none)."""
    if off is not None and value.lower() == off:
        return None
    try:
        lo, hi = (float(v) for v in value.split(":"))
    except ValueError:
        raise click.BadParameter(f"expected 'LO:HI'{f' or {off!r}' if off else ''}, got {value!r}") from None
    return lo, hi


def _open_bank(obj, bank_dir, engines, max_voices, clips_per_identity, bank_seed, invented_voices, source_siblings,
               probe_voices, jobs):
    from weighter.corpus import BankSpec, open_or_build_bank

    spec = BankSpec(tuple(e.strip() for e in engines.split(",") if e.strip()), clips_per_identity,
                    max_voices, bank_seed, invented_voices, source_siblings, probe_voices)
    return open_or_build_bank(spec, bank_dir, jobs=jobs, progress=obj["progress"])


@main.command()
@_bank_options
@click.option("--json", "as_json", is_flag=True, help="Print the bank summary as JSON.")
@click.option("--compact", "compact_dir", type=click.Path(path_type=Path), default=None,
              help="Also write a compact copy of the bank there (clips as Ogg Opus, about 15 kbps: a ninth "
                   "of the FLAC), to carry to a machine without TTS (a GPU for training); "
                   "`weighter train --bank DIR` reads it like any bank.")
@click.option("--compact-splits", default="train,validation", show_default=True,
              help="--compact: the splits to copy, comma-separated.")
@click.option("--compact-clips", type=click.IntRange(min=1), default=None,
              help="--compact: at most this many clips per identity (the first ones). Default: all.")
@click.pass_obj
def bank(obj, as_json, compact_dir, compact_splits, compact_clips, **bank_args):
    """Build (or open) the utterance bank and print its identities, split and distinctness check.

    The bank holds single-speaker TTS clips per identity (base voice x pitch shift), made once
    and cached; `weighter synth` and training mix conversations from it. The split into
    train / validation / heldout is by the person behind a voice, fixed and documented.

    \b
    A copy small enough to carry to a GPU machine (train and validation, 6 clips each, 45 MB):
      weighter bank --invented-voices 100 --source-siblings 100 --compact .carry/bank --compact-clips 6
    """
    from weighter.corpus.voices import INVENTED_PREFIX, PROBE_PREFIX

    b = _open_bank(obj, **bank_args)
    if compact_dir is not None:
        from weighter.corpus.bank import compact_bank

        b = compact_bank(b, compact_dir, tuple(s.strip() for s in compact_splits.split(",") if s.strip()),
                         compact_clips, jobs=bank_args["jobs"], progress=obj["progress"])
    summary = b.summary()
    summary["splits"] = b.split_table()
    if as_json:
        click.echo(json.dumps(summary, indent=1))
        return
    click.echo(f"bank: {summary['directory']}")
    click.echo(f"identities: {summary['identities']} ({', '.join(f'{k} {v}' for k, v in summary['per_split'].items())})"
               f", clips: {summary['clips']}, audio: {summary['audio_seconds'] / 60:.1f} min")
    check = summary["check"]
    click.echo(f"distinctness: clip accuracy {check.get('clip_accuracy')} ({check.get('method')}), "
               f"confused pairs: {len(check.get('confused_pairs', []))}, rejected: {' '.join(check.get('rejected', [])) or 'none'}")
    for split, persons in summary["splits"].items():
        invented = [p for p in persons if p.startswith((f"espeak-{INVENTED_PREFIX}", f"espeak-{PROBE_PREFIX}"))]
        named = [p for p in persons if p not in invented]
        count = f"{'and ' if named else ''}{len(invented)} invented" if invented else ""
        click.echo(f"{split:>10}: {' '.join(named + [count] if count else named)}")


@main.command()
@click.argument("out", type=click.Path(path_type=Path))
@_bank_options
@click.option("--split", type=click.Choice(["train", "validation", "heldout"]), default="heldout", show_default=True,
              help="Which identities speak in the corpus.")
@click.option("--files", type=int, default=50, show_default=True, help="Number of conversations.")
@click.option("--min-speakers", type=int, default=1, show_default=True)
@click.option("--max-speakers", type=int, default=4, show_default=True)
@click.option("--min-duration", type=float, default=10.0, show_default=True, help="Seconds.")
@click.option("--max-duration", type=float, default=60.0, show_default=True, help="Seconds.")
@click.option("--overlap", type=float, default=0.1, show_default=True, help="Probability a turn overlaps the last.")
@click.option("--snr", default="10:30", show_default=True, callback=lambda ctx, param, value: _span(value, "none"),
              help="Background noise SNR range in dB, 'LO:HI', or 'none'.")
@click.option("--telephone", type=float, default=0.2, show_default=True, help="Probability of a telephone channel.")
@click.option("--reverb", type=float, default=0.0, show_default=True,
              help="Probability that a file is recorded in a reverberant room (image-source shoebox, each speaker "
                   "at his own place).")
@click.option("--distort", type=float, default=0.0, show_default=True,
              help="Probability of a recording-chain distortion: MP3 round trip, clipping or an equaliser.")
@click.option("--channel", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Probability that a file is heard through a recording channel of its own, instead of --snr and "
                   "--telephone: a room (half of them), coloured noise, a non-speech sound or babble at 5-30 dB "
                   "SNR, a microphone's band and colour, a telephone line with a mu-law, A-law or GSM codec (40%), "
                   "a level. Needs sox for the codecs.")
@click.option("--related", type=float, default=0.0, show_default=True,
              help="Probability that a file of 2+ speakers also holds a relative of its first speaker: another "
                   "pitch of the same person, or its source sibling (near-identical voices in one file).")
@click.option("--empty", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Probability that a file holds no speaker at all, only music, tones, hum or noise (its likes "
                   "are empty; a good store and clustering give it no active slot).")
@click.option("--sounds", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Probability that a conversation also carries such a sound over 2-15 s, 20 to 0 dB under "
                   "its speech.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed and bank: same bytes.")
@click.option("--voices", "voices_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Mix real recordings instead of TTS voices: a folder of SPEAKER/*.flac|wav (one speaker per "
                   "folder; your own enrolment recordings, say). Speakers are split by a fixed hash of their name.")
@click.option("--voice-shares", default="0.35:0.15:0.5", show_default=True,
              help="--voices: shares of speakers in train:validation:heldout (e.g. 0:0:1 puts all in heldout).")
@click.option("--vectors", is_flag=True, help="Write the research's vector simulation (OUT/vectors.npz) instead of audio.")
@click.option("--dim", type=int, default=32, show_default=True, help="--vectors: dimension D.")
@click.option("--frames", type=int, default=300, show_default=True, help="--vectors: frames per file.")
@click.option("--pool", type=int, default=200, show_default=True, help="--vectors: speakers in the pool.")
@click.option("--noise", type=float, default=0.3, show_default=True, help="--vectors: noise std.")
@click.option("--step", type=float, default=0.1, show_default=True, help="--vectors: random-walk step std.")
@click.pass_obj
def synth(obj, out, split, files, min_speakers, max_speakers, min_duration, max_duration, overlap, snr, telephone,
          reverb, distort, channel, related, empty, sounds, seed, voices_dir, voice_shares, vectors, dim, frames, pool, noise,
          step, **bank_args):
    """Generate a labelled multi-speaker corpus in OUT, offline, from TTS voices.

    \b
    OUT/audio/*.flac      16 kHz mono conversations
    OUT/manifest.csv      path,likes (the speakers heard, ';'-separated)
    OUT/reference.rttm    who speaks when (ground truth)
    OUT/speakers.json     the identity split and the corpus settings

    Speakers come from one split of the utterance bank (default: heldout, never used in
    training), or with --voices from a folder of real single-speaker recordings:

    \b
      weighter synth real --voices ../shared/real-speech/librispeech --max-speakers 3 --max-duration 40

    With --vectors, writes the research's vector simulation instead.
    """
    if vectors:
        import numpy as np

        from weighter.corpus import VectorSimConfig, simulate_vectors, switch_rate

        config = VectorSimConfig(files, pool, dim, frames, max(2, min_speakers) if min_speakers > 1 else min_speakers,
                                 max_speakers, noise, step, seed)
        arrays = simulate_vectors(config)
        out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out / "vectors.npz", **arrays)
        click.echo(json.dumps({"file": str(out / "vectors.npz"), "switches_per_frame": round(switch_rate(arrays["labels"]), 4),
                               "shape": list(arrays["frames"].shape)}))
        return
    from weighter.corpus import MixerConfig, write_corpus

    config = MixerConfig(min_speakers, max_speakers, min_duration, max_duration, overlap=overlap, snr_db=snr,
                         telephone=telephone, reverb=reverb, distort=distort, related=related, empty=empty,
                         sounds=sounds, channel=channel)
    if voices_dir is not None:
        from weighter.corpus.recordings import RecordingBank

        b = RecordingBank(voices_dir, _shares(voice_shares))
    else:
        b = _open_bank(obj, **bank_args)
    summary = write_corpus(b, out, split, files, config, seed=seed, progress=obj["progress"])
    click.echo(json.dumps(summary) if obj["quiet"] else
               f"wrote {summary['files']} files ({summary['audio_seconds'] / 60:.1f} min, "
               f"{summary['speakers_heard']} {split} speakers, "
               f"{sum(v for k, v in summary['channels'].items() if k.startswith('telephone'))} telephone) to {out}")


def _shares(text: str) -> tuple[float, float, float]:
    try:
        shares = tuple(float(v) for v in text.split(":"))
    except ValueError:
        shares = ()
    if len(shares) != 3:
        raise click.BadParameter(f"{text!r}: expected three shares TRAIN:VALIDATION:HELDOUT, e.g. 0.35:0.15:0.5")
    return shares


_SPEECH_GATE = click.option(
    "--speech-gate", type=click.FloatRange(0, 1, min_open=True), is_flag=False, flag_value=0.2, default=None,
    metavar="[SHARE]",
    help="Keep a slot active only if SHARE of its weighting falls on speech, by a pretrained voice-activity "
         "detector (Silero VAD, pip install 'weighter[vad]'; alone: 0.2). Files of music, tones, hum or noise then "
         "get no speaker, and weightings (spans) keep to speech and 1 s either side of it; it costs embedding "
         "speed (docs/model.md, the speech gate).")
_PRECISIONS = click.Choice(["auto", "float32", "bfloat16"])  # weighter.embedder.device.PRECISIONS, without torch
_PRECISION = click.option(
    "--precision", type=_PRECISIONS, default="auto", show_default=True,
    help="Number format of the speaker encoder: auto runs it in bfloat16 on a CPU that computes bfloat16 natively "
         "(AVX512-BF16 or AMX; about 1.6x the embedding speed, each window's embedding within a cosine of 0.99 of "
         "float32's), float32 elsewhere (float32: the format the model was trained in).")


# --ray [ADDRESS] and the actor pool's options (embed, index build, index add).
_RAY_OPTIONS = [
    click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
                 help="Embed on a Ray cluster (pip install 'weighter[ray]'): alone or 'local', a Ray started on "
                      "this machine; 'auto' or ray://HOST:10001, join a running cluster. The workers read the "
                      "audio themselves: give paths every node sees. Put it last, or give it a value."),
    click.option("--ray-actors", type=click.IntRange(min=1), default=None,
                 help="--ray: model copies working side by side. Default: the cluster's CPUs (GPUs) / per actor."),
    click.option("--ray-cpus", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
                 help="--ray: CPUs per actor (its torch threads)."),
    click.option("--ray-gpus", type=click.FloatRange(min=0), default=0.0, show_default=True,
                 help="--ray: GPUs per actor; above 0 the actors run the model on CUDA (0.5: two share one)."),
    click.option("--ray-batch", type=click.IntRange(min=1), default=16, show_default=True,
                 help="--ray: files per task (what Ray runs again when a worker dies)."),
]
_ray_options = _options(_RAY_OPTIONS)


def _ray_embedder(model, ray: dict, **embed_kw):
    """A RayEmbedder from the --ray options, or None without --ray."""
    if not ray.get("ray_address"):
        return None
    from weighter.embedder.distributed import RayEmbedder, RayOptions

    options = RayOptions(ray["ray_address"], ray["ray_actors"], ray["ray_cpus"], ray["ray_gpus"], ray["ray_batch"])
    return RayEmbedder(model, options, **embed_kw)


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", type=click.Path(path_type=Path), default=None, help="Model file. Default: the shipped model.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Directory for one .npz per file (embeddings, confidence, active, weightings) + sets.json.")
@click.option("--json", "as_json", is_flag=True, help="Print the embedding sets as JSON on stdout.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--window", type=float, **_library("weighter.embedder.inference:Embedder(window_seconds)"),
              help="Seconds per model window (bounds memory).")
@_SPEECH_GATE
@_PRECISION
@_ray_options
@click.pass_obj
def embed(obj, inputs, model, out, as_json, device, window, speech_gate, precision, **ray):
    """Embed INPUTS (files, directories, file lists, manifests): per file a set of slot embeddings.

    Each slot has a 256-d embedding, a confidence, an active flag (confidence >= the model's
    calibrated threshold) and a weightings timeline at 10 Hz: who is heard when.
    Unusable files get one line each; the rest go on; exit code 1 if any failed.
    With --ray the sets are embedded, and written to --out, by Ray workers.
    """
    from contextlib import ExitStack

    from weighter.audio import discover
    from weighter.embedder import Embedder
    from weighter.embedding_set import set_file_name

    if not out and not as_json:
        raise click.UsageError("give --out DIR, --json, or both")
    sources = [s for target in inputs for s in discover(target)]
    errors: list = []
    with ExitStack() as stack:
        ray_embedder = _ray_embedder(model, ray, window_seconds=window, speech_gate=speech_gate, precision=precision)
        if ray_embedder:  # sets come back as they finish; the workers write --out themselves
            sets, model_id = stack.enter_context(ray_embedder).stream(sources, errors, out_dir=out), None
        else:
            embedder = Embedder.load(model, device=device, window_seconds=window, speech_gate=speech_gate,
                                     precision=precision)
            sets, model_id = embedder.embed(sources, progress=obj["progress"], errors=errors), embedder.model_id
        if out:
            out.mkdir(parents=True, exist_ok=True)
        index, kept = [], []
        for s in sets:
            model_id, name = s.model_id, set_file_name(s.path) + ".npz"
            if out and not ray_embedder:
                s.save(out / name)
            index.append({"path": s.path, "file": name, "active_slots": int(s.active.sum()),
                          "duration": round(s.duration, 3)})
            kept += [s] if as_json else []
            if not as_json and not obj["quiet"]:
                spans = "; ".join(f"slot {n}: " + ", ".join(f"{a:.1f}-{b:.1f}s" for a, b in s.spans(n)[:4])
                                  for n in map(int, s.active.nonzero()[0]))
                click.echo(f"{s.path}\t{int(s.active.sum())} active of {len(s.active)}\t{spans}")
    for error in errors:
        click.echo(f"error: {error}", err=True)
    if out:
        (out / "sets.json").write_text(json.dumps({"model_id": model_id, "sets": index}, indent=1))
    if as_json:
        click.echo(json.dumps({"model_id": model_id, "sets": [s.to_json() for s in kept]}))
    click.echo(f"{len(index)} files embedded, {len(errors)} failed", err=True)
    sys.exit(1 if errors else 0)


@main.group(cls=_Group)
def index():
    """Build and maintain a store: SQLite (files, slots, timelines) + FAISS (active slot embeddings).

    \b
      weighter index build corpus/ --store calls.store
      weighter index add new_calls/ --store calls.store     # new and changed files only
      weighter index remove old.flac --store calls.store
      weighter index info --store calls.store --check
      weighter index optimize --store calls.store         # fold recent writes into one index
    """


_STORE = click.option("--store", "store_dir", type=click.Path(path_type=Path), required=True, help="Store directory.")
_MODEL = click.option("--model", type=click.Path(path_type=Path), default=None, help="Model file. Default: the shipped model.")


def _add(obj, inputs, store_dir, model, index_type, create, as_json, speech_gate=None, ray=None, precision="auto"):
    from weighter.audio import discover
    from weighter.embedder import Embedder
    from weighter.index import Store, add_files

    if (ray or {}).get("ray_address"):
        from weighter.embedder.distributed import require_ray

        require_ray()  # before a store is made
    sources = [s for target in inputs for s in discover(target)]
    store = Store(store_dir, create=create)
    embedder = Embedder.load(model, speech_gate=speech_gate if create else store.speech_gate, precision=precision)
    store.check_model(embedder.model_id)
    errors: list = []
    ray_embedder = _ray_embedder(model, ray or {}, speech_gate=embedder.speech_gate, precision=precision)
    if ray_embedder:  # the driver hashes, writes and commits; the actors embed
        with ray_embedder:
            ray_embedder.start()  # a cluster that cannot be reached fails here, before any hashing
            result = add_files(store, embedder, sources, errors=errors, index_type=index_type,
                               embed=ray_embedder.stream)
    else:
        result = add_files(store, embedder, sources, progress=obj["progress"], errors=errors, index_type=index_type)
    for error in errors:
        click.echo(f"error: {error}", err=True)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=1))
    else:
        click.echo(f"{result.added} files embedded and stored, {result.unchanged} unchanged, "
                   f"{result.failed} failed; store: {result.store.files} files, {result.store.active_slots} active "
                   f"slots, index {result.store.index_type}")
    sys.exit(1 if errors else 0)


@index.command("build")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@_STORE
@_MODEL
@click.option("--index-type", default=None, help="FAISS factory string (e.g. 'HNSW32,Flat', 'IVF1024,Flat'). "
              "Default: exact 'Flat' up to 100k active slots, beyond 'IVF<4 sqrt(n)>,SQfp16' probing the fewest "
              "lists that find recall@10 >= 0.95 for the store's own slots (tuned per store, x2).")
@_SPEECH_GATE
@_PRECISION
@click.option("--json", "as_json", is_flag=True)
@_ray_options
@click.pass_obj
def index_build(obj, inputs, store_dir, model, index_type, speech_gate, precision, as_json, **ray):
    """Create a store from INPUTS (audio directory, file list or manifest) and index every file.

    With --speech-gate the store records it, and `index add` and `query` use it too.
    With --ray, Ray workers embed while this process writes the store (docs/scale.md)."""
    from weighter.index import Store

    if (store_dir / "store.sqlite").exists() and Store(store_dir).info().files:
        raise click.UsageError(f"{store_dir} already holds files: use `weighter index add`")
    _add(obj, inputs, store_dir, model, index_type, True, as_json, speech_gate, ray, precision)


@index.command("add")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@_STORE
@_MODEL
@_PRECISION
@click.option("--json", "as_json", is_flag=True)
@_ray_options
@click.pass_obj
def index_add(obj, inputs, store_dir, model, precision, as_json, **ray):
    """Add INPUTS to a store: unchanged files (same content hash) are skipped, changed ones replaced.
    Embedded with the store's model and speech gate (with --ray: by Ray workers)."""
    _add(obj, inputs, store_dir, model, None, False, as_json, ray=ray, precision=precision)


@index.command("remove")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@_STORE
@click.pass_obj
def index_remove(obj, paths, store_dir):
    """Remove files (by path) from a store."""
    from weighter.index import Store, remove_files

    result = remove_files(Store(store_dir), list(paths))
    for p in result.not_in_store:
        click.echo(f"error: {p}: not in the store", err=True)
    click.echo(f"removed {result.removed}; store: {result.store.files} files, {result.store.active_slots} active slots")
    sys.exit(1 if result.not_in_store else 0)


@index.command("optimize")
@_STORE
@click.option("--json", "as_json", is_flag=True)
def index_optimize(store_dir, as_json):
    """Fold the deltas of recent writes into a new base index (and retrain it where the store
    has outgrown its index type). Writes do this by themselves once their deltas hold a quarter
    of the base; readers go on reading the old generation until this one commits."""
    from weighter.index import Store

    store = Store(store_dir)
    before = store.info().deltas
    with store.writing():
        result = store.optimize()
    info = store.info()
    if as_json:
        click.echo(json.dumps({"deltas_folded": before, "active_vectors": result.active_vectors,
                               "index_type": result.index_type, "faiss_file": info.faiss_file}))
        return
    click.echo(f"folded {before} delta(s) into {info.faiss_file}: {result.active_vectors} active vectors, "
               f"index {result.index_type}")


@index.command("info")
@_STORE
@click.option("--check", is_flag=True, help="Verify that SQLite is intact and FAISS holds exactly the active slots.")
@click.option("--repair", is_flag=True, help="With --check: rebuild the FAISS index from SQLite if they disagree.")
@click.option("--json", "as_json", is_flag=True)
def index_info(store_dir, check, repair, as_json):
    """What a store holds; --check verifies it."""
    from weighter.index import Store

    store = Store(store_dir)
    info = store.info().to_dict()
    if check:
        info["problems"] = store.check()
        if info["problems"] and repair:
            with store.writing():
                store.repair()
            info["repaired"] = True
            info["problems_after_repair"] = store.check()
    if as_json:
        click.echo(json.dumps(info, indent=1))
    else:
        for key, value in info.items():
            click.echo(f"{key}: {value}")
    remaining = info.get("problems_after_repair", info.get("problems", []))
    sys.exit(1 if remaining else 0)


def _stored_or_embedded(store, path: Path, model):
    """FILE's embedding set from the store when it is there (True), else embedded now (False)."""
    file_id = store.file_id(path)
    if file_id is not None:
        return store.embedding_set(file_id), True
    from weighter.embedder import Embedder

    embedder = Embedder.load(model, speech_gate=store.speech_gate)
    store.check_model(embedder.model_id)
    return embedder.embed([path])[0], False


@main.command()
@click.argument("file", type=click.Path(path_type=Path), required=False)
@_STORE
@click.option("--speaker", "speaker", default=None, metavar="NAME",
              help="Search for a named speaker (`weighter speaker enrol` / `name`) instead of a FILE.")
@_MODEL
@click.option("-k", "k", type=int, **_library("weighter.index.query:query_store(k)"), help="How many files to return.")
@click.option("--min-p", "min_p", type=click.FloatRange(0, 1), default=None,
              help="Leave out files whose p is lower (e.g. 0.5: those more likely than not to share the like).")
@click.option("--slot", type=int, default=None, help="Search with this query slot only (default: all active slots).")
@click.option("--json", "as_json", is_flag=True, help='Print {"query": ..., "results": [...]} on stdout.')
@click.pass_obj
def query(obj, file, store_dir, speaker, model, k, min_p, slot, as_json):
    """Files of the store that share a like with FILE (or where --speaker NAME is heard), and
    where it is heard in each.

    \b
      weighter query call.flac --store S -k 5
      weighter query --speaker "branch manager" --store S -k 50 --min-p 0.5

    FILE may be in the store already or new (it is embedded on the fly). A file's score is its
    best pair of active slots: their cosine (shown next to it), normalised by how close each
    slot sits to the model's score cohort, slots of its training voices (the raw cosine for a
    model without one); 'p' is the calibrated probability that the files share a like. A
    speaker searches with the mean of its references, and with each slot of a group it named.
    Results name the group of the latest clustering run they fall in, and the name it carries.
    """
    from weighter.index import Store, matches_json, query_store
    from weighter.index.speakers import query_speaker, speaker_set

    if (file is None) == (speaker is None):
        raise click.UsageError("give either FILE or --speaker NAME")
    store = Store(store_dir, read_only=True)  # a query writes nothing: the index is mapped, not read whole
    if speaker is not None:
        query_set = speaker_set(store, speaker)
        matches = query_speaker(store, speaker, k=k, min_probability=min_p)
    else:
        query_set, _ = _stored_or_embedded(store, file, model)
        try:
            matches = query_store(store, query_set, k=k, slot=slot)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="'--slot'") from None
        matches = [m for m in matches if min_p is None or m.probability is None or m.probability >= min_p]
    if as_json:
        click.echo(json.dumps(matches_json(query_set, matches)))
        return
    if speaker is not None:
        from weighter.index.speakers import get_speaker

        found = get_speaker(store, speaker)
        click.echo(f"speaker {speaker!r}: the mean of {found.references} reference(s), {found.seconds:.1f} s"
                   + (f", and {len(query_set.embeddings) - 1} slot(s) of named groups" if len(query_set.embeddings) > 1 else ""))
    else:
        click.echo(f"query {query_set.path}: active slots {[int(n) for n in query_set.active.nonzero()[0]]}")
    for rank, m in enumerate(matches, 1):
        p = f"p={m.probability:.2f}" if m.probability is not None else ""
        spans_q = ", ".join(f"{a:.1f}-{b:.1f}" for a, b in m.query_spans[:3])
        spans_s = ", ".join(f"{a:.1f}-{b:.1f}" for a, b in m.stored_spans[:3])
        group = "" if m.group is None else ("  outlier" if m.group < 0 else f"  group {m.group}")
        group += f" ({m.speaker})" if m.speaker else ""
        pair = f"slot {m.query_slot}" if speaker is None else ("mean" if m.query_slot == 0 else "named slot")
        here = "" if speaker is not None else f"  here: {spans_q or '-'} s |"
        click.echo(f"{rank:3d}. {m.score:6.2f} (cos {m.cosine:.3f}) {p}  {m.file}  {pair}->{m.stored_slot}"
                   f"{group}{here} there: {spans_s or '-'} s")
    if not matches:
        click.echo("no file" + ("" if min_p is None else f" with p >= {min_p:g}"))


@main.command()
@_STORE
@click.option("--on", "on", type=click.Choice(["embeddings", "evidence"]), default="embeddings", show_default=True,
              help="What HDBSCAN groups: the slot embeddings (density in the embedding space), or the store's "
                   "evidence graph (each slot joined to its --neighbours nearest slots of other files, the pair's "
                   "distance 1 - p, pairs below --link-p left out, one slot per file in a group). On real speech "
                   "the two were measured in docs/real-speech.md; the options below --on evidence's own are for "
                   "--on embeddings.")
@click.option("--neighbours", type=click.IntRange(min=1), default=10, show_default=True,
              help="--on evidence: nearest slots of other files each slot is joined to.")
@click.option("--link-p", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="--on evidence: pairs less likely than this (the query's p) are no edge; --assign places a "
                   "new slot with a member at least this likely.")
@click.option("--min-cluster-size", type=int, default=None,
              help="Smallest group, in slots. Default: 3, growing with the fitted sample (5 at 30k slots); "
                   "--on evidence: 2.")
@click.option("--min-samples", type=int, default=None, help="HDBSCAN min_samples (larger: more conservative, more outliers). Default: 1.")
@click.option("--pca-dims", type=int, **_library(_CLUSTERER + "pca_dims)"),
              help="PCA dimensions before HDBSCAN (0 = none).")
@click.option("--whiten/--no-whiten", **_library(_CLUSTERER + "whiten)"),
              help="Capped whitening: bring the PCA components stronger than the mean down to it (weaker ones "
                   "stay), then scale slots to unit length before HDBSCAN (--no-whiten: plain PCA distances).")
@click.option("--sample-size", type=int, **_library(_CLUSTERER + "sample_size)"),
              help="Fit HDBSCAN on at most this many slots; assign the rest to the groups found.")
@click.option("--method", type=click.Choice(["eom", "leaf"]),
              **_library(_CLUSTERER + "cluster_selection_method)"),
              help="HDBSCAN cluster selection.")
@click.option("--split-evidence", type=click.FloatRange(min=0), default=None,
              help="Split a group that holds two voices: along the group's main direction, two Gaussians must "
                   "beat one by more than this much BIC (e.g. 5), each part at least --min-cluster-size slots. "
                   "Off by default: on fresh synthetic corpora, evidence 5 raised link F1 / ARI by 0.015 / 0.021 "
                   "where near-identical voices were merged and lowered them by 0.016 / 0.011 on ordinary voices.")
@click.option("--group-slack", type=click.FloatRange(min=0, min_open=True), **_library(_CLUSTERER + "group_slack)"),
              help="How far beyond its farthest member a group takes a slot placed later (--assign, slots beyond "
                   "--sample-size), as a multiple of that member's distance. Smaller turns away more new voices and "
                   "more slots of known ones: on synthetic corpora 1.5 placed 0.99 of known speakers' slots right and "
                   "kept 0.65 of strangers' out, 1.0 placed 0.84 and kept 0.97 out.")
@click.option("--pairs/--no-pairs", default=True, show_default=True,
              help="Also make a group of two outliers that are each other's most alike slot at the model's merge "
                   "cosine or more (or --pair-cosine): a voice heard in only two files, which HDBSCAN's smallest "
                   "group (3 slots) cannot hold.")
@click.option("--pair-cosine", type=click.FloatRange(-1, 1), default=None,
              help="With --pairs: this cosine instead of the model's merge cosine.")
@click.option("--assign-outliers", type=float, default=None,
              help="Also place outliers in their nearest group when membership >= this (0-1).")
@click.option("--assign", "assign_file", type=click.Path(path_type=Path), default=None,
              help="Place FILE's slots into the latest run's groups (no re-clustering) and print them.")
@click.option("--run", "run_id", type=int, default=None, help="Show (or --assign into) this run instead of clustering anew.")
@_MODEL
@click.option("--json", "as_json", is_flag=True, help='Print {"groups": [...], "outliers": [...]}.')
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), default=None, help="Export members to CSV.")
@click.option("--map", "map_path", type=click.Path(path_type=Path), default=None, help="Write a 2-D map PNG.")
@click.pass_obj
def cluster(obj, store_dir, on, neighbours, link_p, min_cluster_size, min_samples, pca_dims, whiten, sample_size, method, split_evidence,
            group_slack, pairs, pair_cosine, assign_outliers, assign_file, run_id, model, as_json, csv_path, map_path):
    """Sort the store's active slots into discovered groups (speakers nobody labelled).

    \b
      weighter cluster --store S                  # cluster anew, print a summary
      weighter cluster --store S --json --map groups.png --csv groups.csv
      weighter cluster --store S --assign new.flac   # into the latest run's groups

    Each group comes with its persistence (0-1: how long it holds together in HDBSCAN's
    tree). Measured on synthetic corpora, groups above 0.2 linked the right files 91% of the
    time, groups below 0.05 70%. When no group reaches 0.1 the run warns: HDBSCAN finds groups
    even where nobody speaks in two files.
    """
    from weighter.cluster import (SlotClusterer, assign_set, cluster_store, draw_map, export_csv, latest_run, run_result,
                                  run_summary)
    from weighter.cluster.clusterer import LOW_PERSISTENCE
    from weighter.cluster.graph import GraphClusterer
    from weighter.index import Store

    store = Store(store_dir)
    if assign_file is not None:
        run = latest_run(store, run_id)
        file_set, stored = _stored_or_embedded(store, assign_file, model)
        members = assign_set(store, run, file_set, persist=stored)
        payload = {"run": run, "file": str(assign_file), "stored": stored,
                   "slots": [{"slot": m.slot, "group": m.group, "probability": m.probability, "spans": m.spans}
                             for m in members]}
        if as_json:
            click.echo(json.dumps(payload))
        else:
            for m in payload["slots"]:
                where = ", ".join(f"{a:.1f}-{b:.1f}s" for a, b in m["spans"][:4])
                group = f"group {m['group']}" if m["group"] >= 0 else "outlier (no group)"
                click.echo(f"slot {m['slot']}: {group} (membership {m['probability']:.2f}) {where}")
        return
    if run_id is None and on == "evidence":
        clusterer = GraphClusterer(neighbours=neighbours, min_cluster_size=min_cluster_size or 2,
                                   cluster_selection_method=method or "eom", link_probability=link_p)
        run = cluster_store(store, clusterer)
    elif run_id is None:
        clusterer = SlotClusterer(min_cluster_size=min_cluster_size, min_samples=min_samples, pca_dims=pca_dims,
                                  sample_size=sample_size, cluster_selection_method=method, whiten=whiten,
                                  split_evidence=split_evidence, group_slack=group_slack,
                                  pair_cosine=pair_cosine if pairs else None)
        run = cluster_store(store, clusterer, assign_outliers, pairs=pairs)
    else:
        run = latest_run(store, run_id)
    # every member with its spans only where they are written (18 s at 1M slots); the summary else
    result = run_result(store, run) if as_json or csv_path else None
    if csv_path:
        export_csv(result, csv_path)
    if map_path:
        draw_map(store, run, map_path)
    if as_json:
        click.echo(json.dumps(result))
        return
    result = run_summary(store, run)
    r = result["run"]
    if r["params"].get("method") == "graph":
        how = (f"evidence graph: {r['params']['neighbours']} neighbours, {r['params']['edges']} pairs with p >= "
               f"{r['params']['link_probability']:g}")
    else:
        how = (f"min_cluster_size {r['params']['min_cluster_size_used']}, min_samples {r['params']['min_samples_used']}, "
               f"{_space_words(r['params'])}")
    click.echo(f"run {r['id']}: {r['slots']} slots -> {r['groups']} groups, {r['outlier_share']:.1%} outliers ({how})")
    if r["params"].get("split_evidence") is not None:
        click.echo(f"split in two: {r['params']['groups_split']} group(s) holding two voices "
                   f"(--split-evidence {r['params']['split_evidence']:g})")
    if r["params"].get("pairs"):
        click.echo(f"groups of two: {r['params']['pairs']} (outliers each other's most alike slot at cosine >= "
                   f"{r['params']['pair_cosine']:.2f}; persistence 0)")
    click.echo(f"{'group':>6} {'slots':>6} {'files':>6} {'persistence':>11}  example files")
    for g in result["groups"]:
        examples = ", ".join(g["examples"])
        persistence = f"{g['persistence']:.2f}" if "persistence" in g else "-"
        name = f"[{g['name']}] " if g.get("name") else ""
        click.echo(f"{g['id']:>6} {g['size']:>6} {g['files']:>6} {persistence:>11}  {name}{examples}")
    for n in result["names"]:
        if n["status"] != "named":
            click.echo(f"name {n['name']!r}: {_NAME_STATUS[n['status']]} ({n['anchors']} of its slots in this run; "
                       f"by group: {n['groups'] or '-'})", err=True)
    if r["groups_may_be_chance"]:
        click.echo(f"warning: no group stands clearly apart (strongest persistence {r['strongest_persistence']:.3f} "
                   f"< {LOW_PERSISTENCE}): these groups may be chance; does anyone speak in more than one file?",
                   err=True)
    for label, path in (("csv", csv_path), ("map", map_path)):
        if path:
            click.echo(f"{label}: {path}")


_NAME_STATUS = {"split": "no group holds most of its slots, so no group carries it",
                "gone": "none of its slots is in a group of this run, so no group carries it",
                "contested": "the group holding most of its slots carries another name, which holds more of it"}


@main.group(cls=_Group)
def speaker():
    """Named speakers: enrol a person from clips, or name a discovered group; find them by name.

    \b
      weighter speaker enrol Alice alice1.flac call7.flac@12.5-30 --store S
      weighter speaker name 3 "branch manager" --store S    # group 3 of the latest run
      weighter speaker list --store S
      weighter query --speaker Alice --store S -k 50
      weighter export --store S --rttm who.rttm --csv who.csv

    A name is kept in the store, not on a group: in every clustering run the group holding
    most of the speaker's slots carries it; `weighter cluster` reports a name whose slots split
    over groups or vanish.
    """


def _speaker_json(speaker, **extra) -> str:
    return json.dumps(speaker.to_dict() | extra)


@speaker.command("enrol")
@click.argument("name")
@click.argument("clips", nargs=-1, required=True)
@_STORE
@_MODEL
@click.option("--json", "as_json", is_flag=True, help="Print the speaker as JSON.")
def speaker_enrol(name, clips, store_dir, model, as_json):
    """Enrol NAME from CLIPS of that person alone (FILE, or FILE@START-END in seconds); an
    existing NAME gains the clips. Each clip's most confident active slot becomes a reference.
    A clip in which no voice is heard is refused and nothing is written."""
    from weighter.embedder import Embedder
    from weighter.index import Store
    from weighter.index.speakers import check_name, enrol, parse_clip

    check_name(name)
    parsed = [parse_clip(c) for c in clips]
    store = Store(store_dir)
    embedder = Embedder.load(model, speech_gate=store.speech_gate)
    if store.model_id is not None:
        store.check_model(embedder.model_id)
    sets = [embedder.embed_clip(path, span) for path, span in parsed]
    result, created = enrol(store, name, sets)
    if as_json:
        click.echo(_speaker_json(result, created=created))
        return
    click.echo(f"{'enrolled' if created else 'refined'} {result.name!r}: {result.references} reference(s), "
               f"{result.seconds:.1f} s of speech")


@speaker.command("name")
@click.argument("group", type=int)
@click.argument("name")
@_STORE
@click.option("--run", "run_id", type=int, default=None, help="The clustering run (default: the latest).")
@click.option("--json", "as_json", is_flag=True, help="Print the speaker as JSON.")
def speaker_name(group, name, store_dir, run_id, as_json):
    """Name GROUP of the latest clustering run NAME: its slots become the speaker's references,
    and every later run's group that holds most of them carries the name."""
    from weighter.index import Store
    from weighter.index.speakers import name_group

    result = name_group(Store(store_dir), group, name, run_id)
    if as_json:
        click.echo(_speaker_json(result))
        return
    click.echo(f"named group {group} {result.name!r}: {result.references} reference slot(s), {result.seconds:.1f} s")


@speaker.command("list")
@_STORE
@click.option("--json", "as_json", is_flag=True, help='Print {"speakers": [...], "run": ..., "names": [...]}.')
def speaker_list(store_dir, as_json):
    """The store's named speakers, and the group of the latest run that carries each name."""
    from weighter.index import Store
    from weighter.index.speakers import speakers_json

    listing = speakers_json(Store(store_dir))
    if as_json:
        click.echo(json.dumps(listing))
        return
    run, names = listing["run"], {n["name"]: n for n in listing["names"]}
    if not listing["speakers"]:
        click.echo("no named speakers (weighter speaker enrol / name)")
    for s in listing["speakers"]:
        n = names.get(s["name"])
        where = "" if n is None else (f"  group {n['group']} of run {run}" if n["status"] == "named"
                                      else f"  {n['status']} in run {run}")
        click.echo(f"{s['name']}: {s['references']} reference(s), {s['seconds']:.1f} s{where}")


@speaker.command("rename")
@click.argument("old")
@click.argument("new")
@_STORE
@click.option("--json", "as_json", is_flag=True, help="Print the speaker as JSON.")
def speaker_rename(old, new, store_dir, as_json):
    """Call speaker OLD NEW from now on (its references stay)."""
    from weighter.index import Store
    from weighter.index.speakers import rename

    result = rename(Store(store_dir), old, new)
    click.echo(_speaker_json(result) if as_json else f"renamed {old!r} to {result.name!r}")


@speaker.command("remove")
@click.argument("name")
@_STORE
@click.option("--json", "as_json", is_flag=True, help="Print the removed speaker as JSON.")
def speaker_remove(name, store_dir, as_json):
    """Forget speaker NAME and its references (stored files and groups stay)."""
    from weighter.index import Store
    from weighter.index.speakers import remove

    result = remove(Store(store_dir), name)
    click.echo(_speaker_json(result) if as_json else f"removed {result.name!r} ({result.references} reference(s))")


@main.command()
@_STORE
@click.option("--rttm", "rttm_path", type=click.Path(path_type=Path), default=None,
              help="Write who speaks when as RTTM (file id: the file's stem).")
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), default=None,
              help="Write file, speaker, start, end, p as CSV.")
@click.option("--run", "run_id", type=int, default=None, help="Label with this clustering run's groups (default: the latest).")
@click.option("--json", "as_json", is_flag=True, help='Print {"turns": [...]} on stdout.')
@click.pass_obj
def export(obj, store_dir, rttm_path, csv_path, run_id, as_json):
    """Who speaks when in every stored file: each active slot's spans, named where a named
    speaker is known (its group carries the name, or the slot is at least 0.5 likely to be
    them), group_G for a group of the run, unknown_S elsewhere.

    \b
      weighter export --store S --rttm who.rttm --csv who.csv
    """
    from dataclasses import asdict

    from weighter.index import Store
    from weighter.index.speakers import clustering_run, iter_speaker_turns, write_turns

    if not (rttm_path or csv_path or as_json):
        raise click.UsageError("give --rttm OUT, --csv OUT or --json")
    store = Store(store_dir)
    run = clustering_run(store, run_id) if run_id is not None else store.run_id()
    turns = iter_speaker_turns(store, run, progress=obj["progress"])  # a file at a time: any store size
    if as_json:
        turns = list(turns)
    written = write_turns(turns, rttm_path, csv_path) if rttm_path or csv_path else None
    if as_json:
        click.echo(json.dumps({"run": run, "turns": [asdict(t) for t in turns]}))
        return
    click.echo(f"{written['turns']} turns in {written['files']} files, {written['named']} named speaker(s)"
               f"{'' if run is None else f', groups of run {run}'}")
    for label, path in (("rttm", rttm_path), ("csv", csv_path)):
        if path:
            click.echo(f"{label}: {path}")


@main.command()
@_STORE
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. 127.0.0.1: this machine only; 0.0.0.0 opens the store's audio to the "
                   "network (it warns).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--root", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Corpus root: send audio only of stored files inside it. Default: any file the store holds.")
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="The model that embeds uploaded files: the store's own. Default: the shipped model.")
@click.option("--upload-limit", type=click.FloatRange(min=0, min_open=True), default=50.0, show_default=True,
              metavar="MIB", help="Largest file a user may upload to search with, in MiB.")
@click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Read the token from this file (else $WEIGHTER_TOKEN, else a new random one, printed in the "
                   "address).")
@click.option("--no-token", is_flag=True, help="Need no token: only with a loopback --host (127.0.0.1, localhost, ::1).")
@click.option("--read-only", is_flag=True, help="Refuse every write: no naming of groups, no uploads.")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="Also accept requests whose Host is NAME (a reverse proxy's public name). IP addresses, "
                   "localhost and this machine's names are always accepted; other names are refused against "
                   "DNS rebinding.")
@click.pass_obj
def serve(obj, store_dir, host, port, root, model, upload_limit, token_file, no_token, read_only, allowed_hosts):
    """Browse a store in a web browser: search, listen, skim and name groups.

    \b
      weighter serve --store walk/store          # then open the address it prints
      weighter serve --store S --read-only --host 0.0.0.0 --allowed-host calls.example.org
    \b
    Search:   pick a stored file by name, or upload one (embedded, never stored), or a named
              speaker: the ranked files with score and p, and where the voice is heard; click a
              span to play it.
    Groups:   the latest clustering run (`weighter cluster`): groups, their members' spans, the
              map; a group's page names it (`weighter speaker name`).
    Speakers: the named speakers, and every file where each is heard.
    File:     a file's slots, their weightings over time, their groups, its nearest files.

    Every request needs the server's token (printed in the address; the browser keeps it in a
    cookie), writes must come from the app's own pages, and Host names other than this
    machine's are refused. Each request is logged on stderr without the token (-q: none).
    Over a network, put it behind a reverse proxy with TLS (docs/serve.md). Every page reads a
    JSON API (/api/..., described by /api/openapi.json) with the shapes of the commands'
    --json (docs/serve.md); files that `weighter index add` commits appear on the next request.
    """
    loopback = host in ("127.0.0.1", "localhost", "::1")
    if no_token and not loopback:
        raise click.UsageError(f"--no-token is only for a loopback --host (127.0.0.1, localhost, ::1), not {host}")
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        # before numpy and FAISS load: each query on one thread (many run at once on the server's threads)
        os.environ.setdefault(name, "1")
    try:
        import uvicorn

        from weighter.serve import create_app
        from weighter.serve.guard import ACCESS_LOG, new_token
    except ImportError as error:
        raise WeighterError(f"weighter serve needs FastAPI and uvicorn ({error.name} is missing): "
                            "pip install 'weighter[serve]'") from None
    token = None if no_token else _serve_token(token_file) or new_token()
    app = create_app(store_dir, root=root, model=model, upload_limit=int(upload_limit * 2**20), token=token,
                     read_only=read_only, allowed_hosts=allowed_hosts)
    if not loopback:
        click.echo(f"warning: listening on {host}: anyone who can reach this machine and holds the token can search "
                   "the store and play its audio, and over plain HTTP the token travels in clear; put a reverse "
                   "proxy with TLS in front (docs/serve.md)", err=True)
    if not obj["quiet"]:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        ACCESS_LOG.addHandler(handler)
        ACCESS_LOG.setLevel(logging.INFO)
        ACCESS_LOG.propagate = False
    shown = f"http://{'[%s]' % host if ':' in host else host}:{port}/" + (f"?token={token}" if token else "")
    click.echo(f"serving {store_dir}{' read-only' if read_only else ''} at {shown}  (Ctrl-C stops)", err=True)
    # uvicorn's own access log would print each request's query string, the token with it: ours leaves it out
    uvicorn.run(app, host=host, port=port, access_log=False,
                log_level="warning" if obj["quiet"] or not obj["verbose"] else "info")


def _serve_token(token_file: Path | None) -> str | None:
    """The token from --token-file or $WEIGHTER_TOKEN (at least 16 characters); None: neither."""
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as error:
            raise WeighterError(f"{token_file}: cannot read the token file ({error.strerror})") from None
        source = str(token_file)
    else:
        token, source = os.environ.get("WEIGHTER_TOKEN", "").strip(), "$WEIGHTER_TOKEN"
        if not token:
            return None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise WeighterError(f"{source}: a token must be at least 16 characters without spaces")
    return token


def _space_words(params: dict) -> str:
    """How a run's slots were placed before HDBSCAN, in words (runs from before whitening have no flag)."""
    dims = params.get("pca_dims")
    return (f"PCA {dims}" if dims else "no PCA") + (", whitened" if params.get("whiten") else "")


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@_bank_options
@click.option("--files", type=int, **_library("weighter.training.calibration:recalibrate(files)"), help="Validation conversations to calibrate on.")
@click.option("--seconds", default="10:30", show_default=True, callback=lambda ctx, param, value: _span(value),
              help="Length range MIN:MAX of those conversations, in seconds.")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="Take the weights of this training checkpoint's last step (MODEL.ckpt) instead of MODEL's.")
@click.option("--pooling", type=click.Choice(["frames", "windows"]), default=None,
              help="Set how slots pool frames into embeddings: 'frames' (the W-weighted mean and std of all "
                   "frames, as trained) or 'windows' (the W-mass-weighted mean of 1.6 s window embeddings). "
                   "Changes the model id: stores built with the old setting refuse the new file.")
@click.option("--input-level", type=float, default=None,
              help="Scale every input to this RMS level (dBFS) before the log-mel frontend, so that features do "
                   "not depend on the recording level (the training mixes sit near -21). Changes the model id.")
@click.option("--max-speakers", type=int, default=None,
              help="Calibrate on conversations of 1 to this many speakers (default: as many as the model's "
                   "training mixed, 4 for the shipped model). The threshold and merge cosine suit the speaker "
                   "counts they were fitted on: match the files you will embed.")
@click.option("--scores-only", is_flag=True,
              help="Keep the threshold, merge cosine, slot split and score cohort; fit only the match-probability "
                   "calibrations again, at the current score share (a model calibrated by an earlier version).")
@click.option("--voices", "voices_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Calibrate on conversations of real recordings instead (a folder of SPEAKER/*.flac|wav): its "
                   "validation speakers fit the thresholds, its train speakers give the score cohort.")
@click.option("--pair-prior", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              metavar="P",
              help="State the match probability p for corpora where two files share a speaker with probability P "
                   "(default: as often as the validation files do; a few validation speakers over many files "
                   "share far more often than people in a real corpus, and p would come out too high).")
@click.pass_obj
def calibrate(obj, model, files, seconds, checkpoint, pooling, input_level, max_speakers, scores_only, voices_dir,
              pair_prior, **bank_args):
    """Re-fit MODEL's activity threshold, merge cosine, slot split and match-probability
    calibration on the synthetic bank's validation split, draw its score cohort (slots of the
    bank's train voices, which stores normalise query scores against) and record the share of
    best cohort cosines that normalises a slot, and rewrite MODEL (atomically). The model id
    changes only with --checkpoint, --pooling or --input-level: stores keep working with the
    new file otherwise."""
    from weighter.training.calibration import recalibrate

    if voices_dir is not None:
        from weighter.corpus.recordings import RecordingBank

        bank = RecordingBank(voices_dir)
    else:
        bank = _open_bank(obj, **bank_args)
    result = recalibrate(model, bank, files=files, seconds=seconds, checkpoint=checkpoint,
                         pooling=pooling, scores_only=scores_only, input_level=input_level,
                         max_speakers=max_speakers, pair_prior=pair_prior)
    click.echo(json.dumps(result.to_dict()))


@main.command()
@_STORE
@click.option("--manifest", type=click.Path(path_type=Path), required=True, help="The truth: path,likes per file.")
@click.option("--rttm", type=click.Path(path_type=Path), default=None, help="Frame truth: enables slot EER, DER, ARI.")
@click.option("--run", "run_id", type=int, default=None, help="Clustering run to score (default: the latest, if any).")
@click.option("--json", "as_json", is_flag=True)
def evaluate(store_dir, manifest, rttm, run_id, as_json):
    """Score a store against the truth: count accuracy, retrieval mAP and recall@k, slot EER,
    diarization error of the weightings, and (with a clustering run) file-linking F1, ARI and
    outlier share."""
    from weighter.audio import read_manifest
    from weighter.cluster import latest_run
    from weighter.evaluation import evaluate_store, read_rttm
    from weighter.index import Store

    store = Store(store_dir)
    try:
        run = latest_run(store, run_id)
    except WeighterError:
        if run_id is not None:
            raise
        run = None
    result = evaluate_store(store, read_manifest(manifest), read_rttm(rttm) if rttm else None, run)
    if as_json:
        click.echo(json.dumps(result))
        return
    for key, value in result.items():
        click.echo(f"{key:>20}: {value}")


@main.command()
@click.option("--manifest", type=click.Path(path_type=Path), default=None,
              help="Train from real files: a manifest CSV with path,likes (file-level labels only).")
@click.option("--synthetic", is_flag=True, help="Train from the utterance bank, mixing conversations on the fly.")
@_bank_options
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Where to write the model (.pt).")
@click.option("--steps", type=int, **_library(_TRAIN + "steps"))
@click.option("--batch-size", type=int, **_library(_TRAIN + "batch_size"))
@click.option("--seconds", default="8:20", show_default=True, callback=lambda ctx, param, value: _span(value),
              help="Training crop length range 'LO:HI' (s).")
@click.option("--frame-supervision", type=float, **_library(_TRAIN + "frame_supervision"),
              help="Weight of the frame-level (RTTM) slot-activity loss, synthetic only; 0 = file-level likes alone.")
@click.option("--balance-activity", is_flag=True,
              help="Synthetic: in the frame activity loss, weigh each speaker's speech and silence frames alike "
                   "(a speaker heard 1 s counts as much as one heard 20 s; speakers heard briefly are the ones "
                   "counting misses).")
@click.option("--separation", type=float, **_library(_TRAIN + "separation"),
              help="Synthetic: weight of a loss that pushes apart two slots matched to two speakers of one file "
                   "(cosine above 0.4): the duplicate merge drops a slot too like another, and the missed "
                   "speakers of undercounted files often had one. 0: off.")
@click.option("--margin", type=float, default=None,
              help="AM-softmax margin of the identity losses, in cosine units (default: the model's own, 0.2 for new "
                   "ones; replaces an --init model's). A larger margin while fine-tuning pushes similar voices apart.")
@click.option("--input-level", type=float, default=None, metavar="DBFS",
              help="Scale every input to this RMS level (dBFS) before the log-mel frontend, in training and in "
                   "every later use of the model (replaces an --init model's). For recordings far quieter or louder "
                   "than the synthetic mixes (median -21 dBFS). Default: none, the features ignore level anyway "
                   "except near silence.")
@click.option("--combine", type=click.Choice(["sum", "max", "noisy_or"]), **_library(_TRAIN + "combine"),
              help="How slots combine into one file-level prediction per like.")
@click.option("--loss", type=click.Choice(["wbce", "bce"]), **_library(_TRAIN + "loss"))
@click.option("--lr", type=float, **_library(_TRAIN + "lr"))
@click.option("--eval-every", type=int, **_library(_TRAIN + "eval_every"), help="Steps between validations.")
@click.option("--val-files", type=int, **_library(_TRAIN + "val_files"),
              help="Synthetic: validation conversations scored at each validation (the best model by their mAP "
                   "is kept).")
@click.option("--patience", type=int, **_library(_TRAIN + "patience"), help="Validations without gain before stopping.")
@click.option("--slots", type=int, **_library(_MODEL_CFG + "slots"), help="N, slots per file.")
@click.option("--frontend", type=click.Choice(["logmel", "resemblyzer", "distilled", "ssl"]),
              **_library(_MODEL_CFG + "frontend"),
              help="Frame features: learnt from log-mel; Resemblyzer's frozen pretrained speaker encoder; a speaker "
                   "encoder distilled to hold across channels (--encoder, from `weighter distill`); or a frozen "
                   "self-supervised model of torchaudio (--ssl-bundle; its weights download once).")
@click.option("--encoder", "encoder_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="--frontend distilled: the speaker encoder file `weighter distill` wrote (its weights go into "
                   "the model file).")
@click.option("--ssl-bundle", type=str, **_library(_MODEL_CFG + "ssl_bundle"),
              help="--frontend ssl: a torchaudio.pipelines bundle (WAVLM_BASE, WAVLM_LARGE, HUBERT_BASE, ...).")
@click.option("--ssl-layer", type=int, **_library(_MODEL_CFG + "ssl_layer"),
              help="--frontend ssl: the transformer layer whose output are the frame features.")
@click.option("--max-speakers", type=int, default=4, show_default=True, help="Synthetic: speakers per conversation, 1 to this.")
@click.option("--voices", "voices_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Also (or, without --synthetic, only) mix conversations from real recordings: a folder of "
                   "SPEAKER/*.flac|wav whose train split trains and validation split validates "
                   "(`weighter synth --voices`).")
@click.option("--voices-share", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="With --synthetic and --voices: the share of conversations mixed from the recordings.")
@click.option("--partials", "partial_hop", type=click.IntRange(min=0), default=0, show_default=True, metavar="H",
              help="--frontend resemblyzer: one speaker embedding per 1.6-s window every H frames of 10 ms "
                   "(Resemblyzer's own partials; 0: its LSTM's every output). The frozen frames are then "
                   "computed once per conversation and cached: only the weighter trains (minutes on a CPU).")
@click.option("--cached-files", type=click.IntRange(min=1), default=3000, show_default=True,
              help="--partials: training conversations whose frames are cached.")
@click.option("--augment", type=click.FloatRange(0, 1), **_library(_TRAIN + "augment"),
              help="--partials: share of conversations heard through a training channel (recorded noise and "
                   "babble, measured and simulated rooms, microphones, AMR/ADPCM/MP3/Vorbis codecs; "
                   "weighter.training.augment, on ../shared/real-material) instead of coloured noise and a "
                   "telephone band.")
@click.option("--reverb", type=float, default=0.0, show_default=True,
              help="Synthetic: probability that a training conversation is recorded in a reverberant room.")
@click.option("--distort", type=float, default=0.0, show_default=True,
              help="Synthetic: probability of an MP3, clipping or equaliser distortion of a training conversation.")
@click.option("--related", type=float, default=0.0, show_default=True,
              help="Synthetic: probability that a training conversation of 2+ speakers also holds a relative of its "
                   "first speaker (another pitch of the same person, or its source sibling): teaches the slots to "
                   "keep near-identical voices apart. Validation conversations stay as drawn.")
@click.option("--empty", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Synthetic: share of training files with no speaker at all, only music, tones, hum or noise "
                   "(weighter.corpus.sounds): teaches that such files have no active slot.")
@click.option("--sounds", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Synthetic: share of training conversations that also carry such a sound over 2-15 s, 20 to "
                   "0 dB under the speech: teaches the slots' weightings to leave it out.")
@click.option("--pretrain-steps", type=int, **_library(_TRAIN + "pretrain_steps"),
              help="Synthetic: first steps on single-speaker clips (teaches the frames speaker identity).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=_PRECISIONS, **_library(_TRAIN + "precision"),
              help="--partials: the frozen encoder's number format while caching frames (auto: bfloat16 on a CPU "
                   "that computes it natively, as the embedder then runs it).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Processes making training batches (mixing, noise, rooms, codecs) while the model trains "
                   "[default: on a GPU all cores but one, at most 12; on the CPU a quarter of the cores, so "
                   "none on 2; 0 = in the training process]. The batches are the same "
                   "with any number. A bank's train clips are decoded once before they start, and shared.")
@click.option("--resume", is_flag=True, help="Continue from OUT.ckpt.")
@click.option("--init", "init", default=None, metavar="MODEL",
              help="Fine-tune: start from a trained model file ('default' = the shipped one). Its architecture "
                   "replaces --slots/--frontend; its classifier head keeps the rows of likes it knew, new likes get "
                   "new rows.")
@click.pass_obj
def train(obj, manifest, synthetic, out, steps, batch_size, seconds, frame_supervision, balance_activity, separation,
          margin, input_level, combine, loss, lr, eval_every, val_files, patience, slots, frontend, encoder_file,
          ssl_bundle, ssl_layer, max_speakers, voices_dir, voices_share, partial_hop, cached_files, augment, reverb, distort, related, empty, sounds,
          pretrain_steps, seed, device, precision, workers, resume, init, **bank_args):
    """Train an embedder from file-level likes, validating each --eval-every steps.

    \b
    From your own files (the usual case; likes = e.g. the speakers of each call):
      weighter train --manifest calls.csv --out model.pt
    Fine-tuning the shipped model on them instead of starting from scratch:
      weighter train --manifest calls.csv --init default --out model.pt --steps 500
    From TTS voices and real recordings on Resemblyzer's frozen partials (how the shipped
    default is made: docs/model.md):
      weighter train --synthetic --voices ../shared/real-speech/librispeech --frontend resemblyzer \\
        --partials 50 --out model.pt

    The best model by validation retrieval mAP is kept in OUT; OUT.ckpt lets --resume continue.
    """
    from weighter.audio import discover
    from weighter.embedder import DEFAULT_MODEL
    from weighter.embedder.model import WeighterConfig
    from weighter.training.train import TrainConfig, train as run_training

    if bool(manifest) == bool(synthetic or voices_dir):
        raise click.UsageError("give --manifest, or --synthetic and/or --voices")
    if partial_hop and frontend not in ("resemblyzer", "distilled"):
        raise click.UsageError("--partials is an option of --frontend resemblyzer or distilled")
    if frontend == "distilled" and (encoder_file is None or not partial_hop):
        raise click.UsageError("--frontend distilled needs --encoder FILE (from `weighter distill`) and --partials H")
    cfg = TrainConfig(steps=steps, batch_size=batch_size, min_seconds=seconds[0], max_seconds=seconds[1],
                      combine=combine, loss=loss, frame_supervision=frame_supervision,
                      balance_activity=balance_activity, separation=separation, margin=margin, input_level=input_level, lr=lr,
                      eval_every=eval_every, val_files=val_files, patience=patience, seed=seed, device=device, max_speakers=max_speakers, reverb=reverb,
                      distort=distort, related=related, empty=empty, sounds=sounds, pretrain_steps=pretrain_steps,
                      workers=workers, augment=augment, precision=precision)
    init = DEFAULT_MODEL if init == "default" else init
    if not obj["quiet"] and not obj["progress"]:  # no bar (stderr is no terminal): one line per validation
        for name in ("weighter.training.train", "weighter.training.data"):  # the loop's and its batch makers'
            logging.getLogger(name).setLevel(logging.INFO)
    model_cfg = WeighterConfig(slots=slots, frontend=frontend, ssl_bundle=ssl_bundle, ssl_layer=ssl_layer)
    if partial_hop:
        result = _train_cached(obj, out, cfg, model_cfg, partial_hop, cached_files, synthetic, voices_dir,
                               voices_share, bank_args, encoder_file)
    elif voices_dir is not None:
        raise click.UsageError("--voices trains on cached frozen frames: add --frontend resemblyzer --partials H")
    elif synthetic:
        result = run_training(out, cfg, model_cfg, bank=_open_bank(obj, **bank_args), resume=resume,
                              progress=obj["progress"], init=init)
    else:
        result = run_training(out, cfg, model_cfg, sources=discover(manifest, require_likes=True),
                              resume=resume, progress=obj["progress"], init=init)
    score = "count accuracy + mAP" if result.score == "count_accuracy+map" else "mAP"
    click.echo(json.dumps(result.history[-1] if result.history else {}) if obj["quiet"] else
               f"best validation {score} {result.best_score:.4f}"
               f"{'' if result.best_step is None else ' at step %d' % result.best_step}"
               f" of {result.steps}; model: {out}")


_DISTILL = "weighter.training.distill:DistillConfig."


@main.command()
@_bank_options
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="The speaker encoder file to write (its best validation step).")
@click.option("--voices", "voices_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Real recordings, SPEAKER/*.flac|wav: their train split distils, their validation split chooses "
                   "the step (split by a fixed hash of the speaker's name, as `weighter synth --voices`).")
@click.option("--synthetic/--no-synthetic", default=True, show_default=True,
              help="Also distil on the TTS bank's train voices (its validation voices validate too).")
@click.option("--material", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Recorded material, laid out as ../shared/real-material: noise/*/ and rir/*/ give the training "
                   "channels' noises and rooms, speech/*/SPEAKER/ more speech to distil on. "
                   "[default: ../shared/real-material beside the repository]")
@click.option("--speech", "speech_dirs", type=click.Path(path_type=Path, file_okay=False), multiple=True,
              help="More unlabelled speech, SPEAKER/*.flac|wav|ogg (repeatable): all of it distils.")
@click.option("--clean-clips", "clips", type=click.IntRange(min=8), **_library(_DISTILL + "clips"),
              help="Clean clips of one speaker each, made once with their channels.")
@click.option("--clip-seconds", type=click.FloatRange(min=3.2), **_library(_DISTILL + "clip_seconds"))
@click.option("--variants", type=click.IntRange(min=1), **_library(_DISTILL + "variants"),
              help="Random channels per clip (each a training input).")
@click.option("--real-share", type=click.FloatRange(0, 1), **_library(_DISTILL + "real_share"),
              help="Share of clips from real recordings (--voices, --material, --speech); the rest TTS voices.")
@click.option("--steps", type=click.IntRange(min=1), **_library(_DISTILL + "steps"))
@click.option("--batch-size", type=click.IntRange(min=1), **_library(_DISTILL + "batch_size"), help="Windows per step.")
@click.option("--lr", type=float, **_library(_DISTILL + "lr"))
@click.option("--centroid", type=click.FloatRange(0, 1), **_library(_DISTILL + "centroid"),
              help="Weight of the clip's mean teacher embedding in each window's target (0: the window's own).")
@click.option("--input-norm", type=click.Choice(["none", "cmn", "smooth"]), **_library(_DISTILL + "input_norm"),
              help="The student's input: Resemblyzer's power mel as it is; each window's per-band log-mel mean "
                   "removed (cmn: a microphone's or room's colour never reaches the network); or only that mean's "
                   "smooth part across the bands (smooth: tilt and broad colour go, the voice's finer average "
                   "spectrum stays).")
@click.option("--eval-every", type=click.IntRange(min=1), **_library(_DISTILL + "eval_every"))
@click.option("--seed", type=int, **_library(_DISTILL + "seed"))
@click.option("--precision", type=_PRECISIONS, **_library(_DISTILL + "precision"),
              help="The encoders' number format: auto runs teacher and student in bfloat16 (CPU autocast) on a CPU "
                   "that computes it natively, float32 elsewhere.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's result (validation figures, history) as JSON.")
@click.pass_obj
def distill(obj, out, voices_dir, synthetic, material, speech_dirs, clips, clip_seconds, variants, real_share, steps,
            batch_size, lr, centroid, input_norm, eval_every, seed, precision, as_json, **bank_args):
    """Distil a speaker encoder that holds across channels from Resemblyzer's frozen one.

    The student starts as Resemblyzer's encoder and learns to give, for speech heard through a
    random channel (rooms, recorded noise, babble, microphones, AMR/ADPCM/MP3/Vorbis codecs),
    what the teacher gives for the same speech heard clean. It needs speech, not labels. Then
    build a Weighter on it (the shipped default's recipe: docs/model.md):

    \b
      weighter distill --voices ../shared/real-speech/librispeech --out encoder.pt
      weighter train --synthetic --voices ../shared/real-speech/librispeech \\
        --frontend distilled --encoder encoder.pt --partials 50 --out model.pt
    """
    from weighter.training.augment import MATERIAL
    from weighter.training.distill import DistillConfig, SpeechSource, distill as run_distill, folder_sources

    material = material or MATERIAL
    train_sources, val_sources = [], []
    if voices_dir is not None:
        from weighter.corpus.recordings import RecordingBank

        real = RecordingBank(voices_dir)
        train_sources.append(SpeechSource(real, "train", real=True, share=float(len(real.identities("train")))))
        val_sources.append(SpeechSource(real, "validation", real=True))
    for folder in ([material / "speech"] if (material / "speech").is_dir() else []) + list(speech_dirs):
        train_sources += folder_sources(folder)
    if synthetic:
        bank = _open_bank(obj, **bank_args)
        train_sources.append(SpeechSource(bank, "train", real=False))
        val_sources.append(SpeechSource(bank, "validation", real=False))
    if not train_sources or not val_sources:
        raise click.UsageError("nothing to distil on: give --voices and/or keep --synthetic")
    if not obj["quiet"] and not obj["progress"]:
        logging.getLogger("weighter.training.distill").setLevel(logging.INFO)
    cfg = DistillConfig(clips=clips, clip_seconds=clip_seconds, variants=variants, real_share=real_share, steps=steps,
                        batch_size=batch_size, lr=lr, centroid=centroid, input_norm=input_norm, eval_every=eval_every,
                        seed=seed, precision=precision)
    result = run_distill(out, cfg, train_sources, val_sources, progress=obj["progress"], material=material)
    click.echo(json.dumps(result.to_dict()) if as_json else
               f"kept step {result.best_step} of {result.steps}: validation mAP degraded "
               f"{result.teacher['degraded_map']:.3f} -> {result.best['degraded_map']:.3f}, clean "
               f"{result.teacher['clean_map']:.3f} -> {result.best['clean_map']:.3f}; encoder {result.encoder_id}: {out}")


def _train_cached(obj, out, cfg, model_cfg, partial_hop, cached_files, synthetic, voices_dir, voices_share,
                  bank_args, encoder_file=None):
    """``weighter train --partials``: the weighter alone, on cached frozen frames of mixed conversations."""
    from weighter.training.cached import Source, train_cached

    model_cfg.partial_hop, model_cfg.pooling = partial_hop, "mean"
    model_cfg.time_strides, model_cfg.channel_shrink = (5, 10), 1  # one token per 0.5-s window, all 256 channels
    train_sources, val_sources = [], []
    if voices_dir is not None:
        from weighter.corpus.recordings import RecordingBank

        real = RecordingBank(voices_dir)
        share = voices_share if synthetic else 1.0
        train_sources.append(Source(real, "train", share))
        val_sources.append(Source(real, "validation"))  # real voices are the yardstick: they alone choose
    if synthetic:
        bank = _open_bank(obj, **bank_args)
        train_sources.append(Source(bank, "train", 1.0 - voices_share if voices_dir else 1.0))
        if voices_dir is None:
            val_sources.append(Source(bank, "validation"))
    encoder = None
    if encoder_file is not None:
        from weighter.embedder.checkpoint import load_encoder

        encoder, _ = load_encoder(encoder_file)
        model_cfg.encoder_input_norm = encoder.input_norm
    return train_cached(out, cfg, model_cfg, [s for s in train_sources if s.share > 0],
                        [s for s in val_sources if s.share > 0], train_files=cached_files, progress=obj["progress"],
                        encoder=encoder)


if __name__ == "__main__":
    main()
