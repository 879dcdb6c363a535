"""The TTS voices of the synthetic corpus and how one clip is spoken.

An *identity* is a base voice shifted in pitch by a fixed number of semitones (sox ``pitch``
moves F0 and formants together: +-3 semitones makes a new speaker, ENVIRONMENT.md). The unit
of the train / validation / held-out split is the *person* behind a base voice, so no held-out
person is ever heard in training, at any pitch.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass

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
    engine: str  # "espeak" | "flite"
    name: str  # the engine's own voice or variant name
    person: str  # who is behind it: the split unit
    split: str  # "train" | "validation" | "heldout"


@dataclass(frozen=True)
class Identity:
    voice: BaseVoice
    pitch: int  # semitones

    @property
    def id(self) -> str:
        return f"{self.voice.engine}-{self.voice.name}{self.pitch:+d}"

    @property
    def split(self) -> str:
        return self.voice.split


def espeak_split(variant: str) -> str:
    """Fixed split of an espeak-ng variant, from a hash of its name (70 / 15 / 15 %).

    A hash, not a shuffle of the installed list, so a voice keeps its split on any machine and
    in any espeak-ng release that adds or drops variants.
    """
    bucket = int(hashlib.sha256(variant.encode()).hexdigest(), 16) % 100
    return "train" if bucket < 70 else "validation" if bucket < 85 else "heldout"


def require_engines(engines: tuple[str, ...]) -> None:
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


def speak(engine: str, voice: str, text: str, words_per_minute: int = 170) -> bytes:
    """One utterance as WAV bytes, from the engine's own process."""
    if engine == "espeak":
        command = ["espeak-ng", "-v", f"en+{voice}", "-s", str(words_per_minute), "--stdout", text]
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
