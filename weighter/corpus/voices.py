"""The TTS voices of the synthetic corpus and how one clip is spoken.

An *identity* is a base voice shifted in pitch by a fixed number of semitones (sox ``pitch``
moves F0 and formants together: +-3 semitones makes a new speaker, ENVIRONMENT.md). The unit
of the train / validation / held-out split is the *person* behind a base voice, so no held-out
person is ever heard in training, at any pitch.

Besides the installed voices, ``invent_voices`` makes new espeak-ng speakers for the train split
only: random variant files (vocal-tract length and formant shape, pitch, voice source,
roughness). espeak-ng reads them from a private copy of its data directory (``espeak_data``).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from weighter.errors import CorpusError

ENGINES = ("espeak", "flite")
PITCHES = (-3, 0, 3)  # semitones; one identity per (base voice, pitch)
SPLITS = ("train", "validation", "heldout")

# flite's voices are four real people (kal16 is kal at 16 kHz; awb_time speaks only times).
# Their split is fixed by hand so that every split keeps engines balanced.
FLITE_VOICES = {"kal16": ("kal", "train"), "awb": ("awb", "train"), "rms": ("rms", "validation"),
                "slt": ("slt", "heldout")}
# espeak-ng variants that are no speaker at all (unvoiced: a pitch shift changes nothing).
ESPEAK_EXCLUDED = {"whisper", "whisperf"}


@dataclass(frozen=True)
class BaseVoice:
    """A TTS voice and the person behind it (the unit of the train / validation / held-out split)."""

    engine: str  # "espeak" | "flite"
    name: str  # the engine's own voice or variant name
    person: str  # who is behind it: the split unit
    split: str  # "train" | "validation" | "heldout"
    variant: str = ""  # an invented voice's espeak-ng variant file ("" for an installed voice)


@dataclass(frozen=True)
class Identity:
    """A speaker of the bank: a base voice at one pitch shift."""

    voice: BaseVoice
    pitch: int  # semitones

    @property
    def id(self) -> str:
        """``<engine>-<voice><pitch>``, e.g. ``espeak-en-us+3``."""
        return f"{self.voice.engine}-{self.voice.name}{self.pitch:+d}"

    @property
    def split(self) -> str:
        """The split of the person behind the voice."""
        return self.voice.split


def espeak_split(variant: str) -> str:
    """Fixed split of an espeak-ng variant, from a hash of its name (70 / 15 / 15 %).

    A hash, not a shuffle of the installed list, so a voice keeps its split on any machine and
    in any espeak-ng release that adds or drops variants.
    """
    bucket = int(hashlib.sha256(variant.encode()).hexdigest(), 16) % 100
    return "train" if bucket < 70 else "validation" if bucket < 85 else "heldout"


def require_engines(engines: tuple[str, ...]) -> None:
    """Raise CorpusError naming every missing program (the TTS engines asked for, and sox)."""
    needed = {"espeak": "espeak-ng", "flite": "flite"}
    missing = [needed[e] for e in engines if shutil.which(needed[e]) is None]
    if shutil.which("sox") is None:
        missing.append("sox")
    if missing:
        raise CorpusError(
            f"missing TTS tools: {', '.join(missing)} (install: apt-get install espeak-ng flite sox "
            "libsox-fmt-all wamerican, or run `make setup`)"
        )


def available_voices(engines: tuple[str, ...] = ENGINES) -> tuple[list[BaseVoice], dict[str, str]]:
    """Installed base voices of the engines, without exact duplicates.

    Returns the voices and the duplicates dropped ({dropped: kept}); two variants are duplicates
    when they speak a test sentence with byte-identical audio (espeak-ng's ``klatt`` = ``caleb``).
    """
    unknown = set(engines) - set(ENGINES)
    if unknown:
        raise CorpusError(f"unknown TTS engine(s): {', '.join(sorted(unknown))} (known: {', '.join(ENGINES)})")
    require_engines(engines)
    voices: list[BaseVoice] = []
    duplicates: dict[str, str] = {}
    if "espeak" in engines:
        seen: dict[str, str] = {}
        for variant in _espeak_variants():
            digest = hashlib.sha256(speak("espeak", variant, "one two three, said the voice.", 175)).hexdigest()
            if digest in seen:
                duplicates[variant] = seen[digest]
                continue
            seen[digest] = variant
            voices.append(BaseVoice("espeak", variant, f"espeak-{variant}", espeak_split(variant)))
    if "flite" in engines:
        listed = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout
        for name, (person, split) in FLITE_VOICES.items():
            if name in listed.split():
                voices.append(BaseVoice("flite", name, f"flite-{person}", split))
    return voices, duplicates


def speak(engine: str, voice: str, text: str, words_per_minute: int = 170, espeak_path: Path | None = None) -> bytes:
    """One utterance as WAV bytes, from the engine's own process. ``espeak_path``: the directory
    holding the espeak-ng-data copy with invented variants (``espeak_data``)."""
    if engine == "espeak":
        command = ["espeak-ng", "-v", f"en+{voice}", "-s", str(words_per_minute), "--stdout", text]
        if espeak_path is not None:
            command[1:1] = [f"--path={espeak_path}"]
    elif engine == "flite":
        command = ["flite", "-voice", voice, "-t", text, "-o", "/dev/stdout"]
    else:
        raise CorpusError(f"unknown TTS engine: {engine}")
    result = subprocess.run(command, capture_output=True)
    if result.returncode != 0 or len(result.stdout) < 100:
        reason = result.stderr.decode(errors="replace").strip().splitlines()[:1]
        raise CorpusError(f"{engine} voice {voice!r} produced no audio ({reason[0] if reason else 'no output'})")
    return result.stdout


def _espeak_variants() -> list[str]:
    out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True).stdout
    variants = []
    for line in out.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 5 and fields[4].startswith("!v/"):
            name = fields[4][3:]
            if name not in ESPEAK_EXCLUDED:
                variants.append(name)
    return sorted(set(variants))


INVENTED_PREFIX = "inv"  # invented variant names: inv000, inv001, ...
PROBE_PREFIX = "prb"  # a probe bank's invented validation speakers: prb000, prb000s, ...
SIBLING_SUFFIX = "s"  # a source sibling's name: its invented parent's and this


def invent_voices(count: int, seed: int = 0, siblings: int = 0, probe: bool = False) -> list[BaseVoice]:
    """``count`` new espeak-ng speakers, all for the train split, each its own person.

    A variant file sets what makes a voice someone's in espeak-ng: the vocal tract (all
    formant frequencies scaled together by 0.88-1.15, each also jittered +-4%, with random
    heights and widths), the pitch (base 60-170 Hz, range 20-90 Hz above it), the voice source
    (espeak's own or one of Klatt's, roughness, voicing and consonant strength). Installed
    variants are edits of the same kind, so invented speakers are more of what the train split
    has; the bank's check drops any that sounds like a validation or held-out identity.

    ``siblings``: the first that many invented voices each get a *source sibling* (name ending
    in ``s``), another person with the same vocal tract, pitch and consonants but another voice
    source, roughness and voicing. Without them every two training voices differ in the vocal
    tract, and a model may learn to ignore the voice source. The first ``count`` voices are the
    same with or without siblings.

    ``probe``: speakers for a probe bank's validation split instead (names PROBE_PREFIX...),
    drawn from random streams of their own: fresh voices that no model was chosen on, none of
    them the train split's invented speakers of the same seed.
    """
    if count < 0 or siblings < 0:
        raise CorpusError(f"invented voices and source siblings are counts: got {count} and {siblings}")
    if siblings > count:
        raise CorpusError(f"{siblings} source siblings need at least as many invented voices (got {count})")
    prefix, split, streams = (PROBE_PREFIX, "validation", ([5], [6])) if probe else (INVENTED_PREFIX, "train", ([], [2]))
    rng = np.random.default_rng([seed, 7919, *streams[0]])
    voices = []
    for k in range(count):
        name = f"{prefix}{k:03d}"
        tract = rng.uniform(0.88, 1.15)
        base = int(rng.integers(60, 171))
        lines = ["language variant", f"name {name}", f"pitch {base} {base + int(rng.integers(20, 91))}"]
        source = int(rng.integers(0, 6))  # 0: espeak's own source; 1-5: Klatt's (6 sounds as 1)
        if source:
            lines.append(f"klatt {source}")
        for formant in range(1, 7):
            freq = int(round(100 * tract * rng.uniform(0.96, 1.04)))
            lines.append(f"formant {formant} {freq} {int(rng.integers(60, 141))} {int(rng.integers(70, 131))}")
        lines += [*_roughness_voicing(rng), f"consonants {int(rng.integers(70, 121))} {int(rng.integers(70, 121))}"]
        voices.append(BaseVoice("espeak", name, f"espeak-{name}", split, "\n".join(lines) + "\n"))
    rng = np.random.default_rng([seed, 7919, *streams[1]])  # its own stream: the voices above never change
    for parent in voices[:siblings]:
        name = parent.name + SIBLING_SUFFIX
        lines = parent.variant.splitlines()
        own = next((int(x.split()[1]) for x in lines if x.startswith("klatt ")), 0)
        source = int(rng.choice([s for s in range(6) if s != own]))
        lines = [f"name {name}" if x.startswith("name ") else x for x in lines
                 if not x.startswith(("klatt ", "roughness ", "voicing "))]
        lines += ([f"klatt {source}"] if source else []) + _roughness_voicing(rng)
        voices.append(BaseVoice("espeak", name, f"espeak-{name}", split, "\n".join(lines) + "\n"))
    return voices


def _roughness_voicing(rng: np.random.Generator) -> list[str]:
    """An invented voice's roughness and voicing lines (of its voice source)."""
    return [f"roughness {int(rng.integers(0, 8))}", f"voicing {int(rng.integers(70, 131))}"]


def espeak_data(voices: list[BaseVoice], directory: Path) -> Path | None:
    """A copy of espeak-ng's data directory under ``directory`` with the invented voices'
    variant files added; the path to pass as ``speak(..., espeak_path=)``. None when no voice
    is invented (the installed data is used)."""
    invented = [v for v in voices if v.variant]
    if not invented:
        return None
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
    found = re.search(r"Data at:\s*(\S+)", version)
    if not found or not Path(found.group(1)).is_dir():
        raise CorpusError(f"cannot find espeak-ng's data directory (espeak-ng --version said: {version.strip()!r})")
    copy = Path(directory) / "espeak-ng-data"
    if not copy.exists():
        shutil.copytree(found.group(1), copy)
        # espeak-ng's voice list holds 349 entries (languages, variants, MBROLA voices together;
        # 1.51) and cannot find a voice beyond them; the bank speaks English only, so the copy
        # keeps only the English languages, to leave room for invented variants (about 238).
        for language in (copy / "lang").rglob("*"):
            if language.is_file() and not language.name.startswith("en"):
                language.unlink()
        shutil.rmtree(copy / "voices" / "mb", ignore_errors=True)
    for voice in invented:
        (copy / "voices" / "!v" / voice.name).write_text(voice.variant)
    listed = subprocess.run(["espeak-ng", f"--path={directory}", "--voices=variant"], capture_output=True, text=True)
    if "maximum number" in listed.stderr:
        raise CorpusError(f"{len(invented)} invented voices do not fit in espeak-ng's voice list "
                          f"({listed.stderr.strip().splitlines()[0]}): ask for fewer")
    return Path(directory)
