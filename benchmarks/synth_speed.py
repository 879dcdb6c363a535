"""Corpus generation speed on this machine: seconds of audio made per wall-clock second.

Two layers, measured apart: the utterance bank (TTS + sox, once per bank) and the conversation
mixer (numpy; what training uses on the fly). Prints one JSON line per figure.

    python benchmarks/synth_speed.py [--voices 12] [--clips 8] [--files 40] [--jobs 2]
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from weighter.corpus import BankSpec, ConversationMixer, MixerConfig, build_bank, write_corpus


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--voices", type=int, default=12, help="base voices (x3 identities)")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        bank = build_bank(BankSpec(max_voices=args.voices, clips_per_identity=args.clips), Path(tmp) / "bank",
                          jobs=args.jobs, progress=False)
        seconds = time.perf_counter() - started
        audio = bank.summary()["audio_seconds"]
        print(json.dumps({"stage": "utterance bank (espeak-ng + flite + sox, incl. distinctness check)",
                          "audio_s": audio, "wall_s": round(seconds, 2), "x_realtime": round(audio / seconds, 1),
                          "jobs": args.jobs}))

        config = MixerConfig(overlap=0.1, telephone=0.2)
        mixer = ConversationMixer(bank, "train", config)
        rng = np.random.default_rng(0)
        started, made = time.perf_counter(), 0.0
        while time.perf_counter() - started < 10:
            made += mixer.sample(rng).duration
        seconds = time.perf_counter() - started
        print(json.dumps({"stage": "conversation mixer in memory (training path, 1 core)", "audio_s": round(made, 1),
                          "wall_s": round(seconds, 2), "x_realtime": round(made / seconds, 1)}))

        started = time.perf_counter()
        info = write_corpus(bank, Path(tmp) / "corpus", "train", args.files, config, progress=False)
        seconds = time.perf_counter() - started
        print(json.dumps({"stage": "weighter synth to FLAC + manifest + RTTM", "audio_s": info["audio_seconds"],
                          "wall_s": round(seconds, 2), "x_realtime": round(info["audio_seconds"] / seconds, 1)}))


if __name__ == "__main__":
    main()
