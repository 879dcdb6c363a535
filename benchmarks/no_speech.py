"""Does the embedder hear speakers where there is nobody? Files of non-speech sound, and calls
that open with one.

    python benchmarks/no_speech.py [--model M] [--speech-gate G] [--files 12] [--split validation] [--seed 0]

1. *No speech at all*: ``--files`` files of 10-40 s per kind of sound, every sound made by sox's
   synthesiser or recorded (alsa-utils' Noise.wav), never by the generator that training may
   use (``weighter.corpus.sounds``): square-wave beeps between digital silence, sawtooth and
   plucked melodies, a trembling triangle chord, band-passed brown noise, high-passed pink
   noise, the recorded noise, and faint hiss (an open line); half of them through the
   telephone channel. A model should give them no active slot.
2. *A call after a sound*: ``--files`` x 4 conversations of the bank's ``--split`` (standard
   mix), each opened by 5-15 s of one of those sounds (10 to 0 dB under its speech, its
   background noise continued under it). Count accuracy with the opening against the same
   conversation without it; the share of the active slots' weighting that falls on the opening;
   and the share of files where an active slot lies mostly (over half its weighting) on it: a
   "speaker" made of the sound.

Prints a JSON object.
"""

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np

from common import STANDARD_MIX
from weighter.audio import load_audio
from weighter.corpus import BankSpec, ConversationMixer, open_or_build_bank
from weighter.corpus.mixer import _speech_power, _telephone
from weighter.embedder import Embedder

SR = 16000
KINDS = ("beeps", "sawtooth", "pluck", "chord", "brown", "pink", "recorded", "hiss")


def sox(seconds: float, *effects) -> np.ndarray:
    """Raw float32 mono from ``sox -n`` and the given synth/effects chain."""
    cmd = ["sox", "-R", "-n", "-r", str(SR), "-c", "1", "-b", "32", "-e", "float", "-t", "raw", "-", *map(str, effects)]
    out = subprocess.run(cmd, check=True, capture_output=True).stdout
    x = np.frombuffer(out, np.float32).copy()
    n = int(seconds * SR)
    return np.pad(x, (0, max(0, n - len(x))))[:n]


def melody(rng: np.random.Generator, seconds: float, wave: str) -> np.ndarray:
    notes = []
    while sum(map(len, notes)) < seconds * SR:
        length = float(rng.choice([0.15, 0.3, 0.45, 0.6]))
        note = f"%{int(rng.integers(-12, 13))}"  # semitones from A4
        notes.append(sox(length, "synth", length, wave, note, "fade", "0", length, length * 0.6))
    return np.concatenate(notes)[: int(seconds * SR)]


def sound(kind: str, rng: np.random.Generator, seconds: float) -> np.ndarray:
    """``seconds`` of one kind of non-speech sound at unit RMS where it sounds."""
    if kind == "beeps":
        on, off = rng.uniform(0.1, 1.0), rng.uniform(0.2, 2.0)
        x = sox(seconds, "synth", on, "square", rng.uniform(350, 1500), "pad", "0", off,
                "repeat", int(seconds / (on + off)) + 1)
    elif kind in ("sawtooth", "pluck"):
        x = melody(rng, seconds, kind)
    elif kind == "chord":
        root = rng.uniform(150, 400)
        x = sox(seconds, "synth", seconds, "triangle", root, "triangle", root * 1.26, "triangle", root * 1.5,
                "tremolo", rng.uniform(2, 8), rng.uniform(20, 60))
    elif kind == "brown":
        x = sox(seconds, "synth", seconds, "brownnoise", "band", rng.uniform(200, 2000), "400",
                "tremolo", rng.uniform(0.1, 1.0), "50")
    elif kind == "pink":
        x = sox(seconds, "synth", seconds, "pinknoise", "highpass", rng.uniform(500, 3000))
    elif kind == "recorded":
        noise = load_audio(Path("/usr/share/sounds/alsa/Noise.wav"))
        start = int(rng.integers(0, len(noise)))
        x = np.resize(np.roll(noise, -start), int(seconds * SR))
    elif kind == "hiss":
        return (rng.normal(size=int(seconds * SR)) * 10 ** (rng.uniform(-70, -55) / 20)).astype(np.float32)
    else:
        raise ValueError(kind)
    return (x / np.sqrt(np.mean(x.astype(np.float64) ** 2) + 1e-20)).astype(np.float32)


def no_speech(embedder: Embedder, files: int, seed: int) -> dict:
    rng = np.random.default_rng([seed, 1])
    per_kind = {}
    for kind in KINDS:
        active, confidence = [], []
        for i in range(files):
            x = sound(kind, rng, float(rng.uniform(10, 40)))
            if kind != "hiss":
                x *= 10 ** (rng.uniform(-30, -10) / 20)
            if i % 2:
                x = _telephone(x, SR)
            s = embedder.embed_audio(x, f"{kind}-{i}")
            active.append(int(s.active.sum()))
            confidence.append(float(s.confidence.max()))
        per_kind[kind] = {"with_active_slot": round(float(np.mean(np.array(active) > 0)), 3),
                          "active_slots": round(float(np.mean(active)), 3),
                          "max_confidence": round(float(np.mean(confidence)), 3)}
    return {"files": files * len(KINDS),
            "with_active_slot": round(float(np.mean([k["with_active_slot"] for k in per_kind.values()])), 3),
            "by_kind": per_kind}


def opened_calls(embedder: Embedder, files: int, split: str, seed: int) -> dict:
    bank = open_or_build_bank(BankSpec(), progress=False)
    mixer = ConversationMixer(bank, split, STANDARD_MIX)
    rng = np.random.default_rng([seed, 2])
    right_plain, right_opened, share, phantom = [], [], [], []
    for i in range(files * 4):
        conv = mixer.sample(rng)
        kind = KINDS[i % len(KINDS)]
        seconds = float(rng.uniform(5, 15))
        speech = _speech_power(conv.audio, conv.segments, SR)
        opening = sound(kind, rng, seconds) * np.sqrt(speech * 10 ** (-rng.uniform(0, 10) / 10))
        if kind == "hiss":
            opening *= 10 ** (-40 / 20)  # an open line before the call: far under the speech
        if conv.snr_db is not None:
            opening += rng.normal(size=len(opening)) * np.sqrt(speech / 10 ** (conv.snr_db / 10))
        if conv.channel == "telephone":
            opening = _telephone(opening, SR)
        plain = embedder.embed_audio(conv.audio, f"call-{i}")
        opened = embedder.embed_audio(np.concatenate([opening.astype(np.float32), conv.audio]), f"opened-{i}")
        right_plain.append(int(plain.active.sum()) == len(conv.likes))
        right_opened.append(int(opened.active.sum()) == len(conv.likes))
        w = opened.weightings[opened.active]  # (active, T) at the timeline rate
        cut = int(round(seconds * opened.timeline_rate))
        mass = w.sum(1) + 1e-9
        share.append(float(w[:, :cut].sum() / mass.sum()) if len(w) else 0.0)
        phantom.append(bool(len(w) and (w[:, :cut].sum(1) / mass > 0.5).any()))
    return {"files": files * 4, "split": split,
            "count_accuracy_plain": round(float(np.mean(right_plain)), 3),
            "count_accuracy_opened": round(float(np.mean(right_opened)), 3),
            "weight_on_opening": round(float(np.mean(share)), 3),
            "files_with_a_sound_slot": round(float(np.mean(phantom)), 3)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--files", type=int, default=12, help="files per kind of sound; calls: 4 x this")
    parser.add_argument("--split", default="validation", choices=["validation", "heldout"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speech-gate", type=float, default=None, help="embed with this speech gate (Silero VAD)")
    args = parser.parse_args()
    embedder = Embedder.load(args.model, speech_gate=args.speech_gate)
    result = {"model": embedder.model_id, "speech_gate": args.speech_gate, "no_speech": no_speech(embedder, args.files, args.seed),
              "opened_calls": opened_calls(embedder, args.files, args.split, args.seed)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
