"""Does the embedder link a *real* speaker across files? The only real speech offline:
Debian alsa-utils' /usr/share/sounds/alsa (8 short phrases of one man, 48 kHz).

Builds 16 files: 8 held-out TTS conversations with 3 of the real man's phrases inserted
(different phrases and positions each time), 8 without him. Stores them, then asks for each
file with him: how many of its top 7 matches also contain him (precision@7; 7 others do), and
how many of its top 7 come from the TTS speakers only. Same for the classic pipeline with
Resemblyzer (a speaker encoder trained on thousands of real voices) when installed.

    python benchmarks/real_speech.py [--model M]
"""

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from weighter.audio import AudioSource, load_audio
from weighter.corpus import BankSpec, ConversationMixer, MixerConfig, open_or_build_bank
from weighter.embedder import Embedder
from weighter.index import Store, add_files, query_store

ALSA = Path("/usr/share/sounds/alsa")


def build(tmp: Path) -> list[AudioSource]:
    phrases = [load_audio(p) for p in sorted(ALSA.glob("*.wav")) if p.name != "Noise.wav"]
    bank = open_or_build_bank(BankSpec(), progress=False)
    mixer = ConversationMixer(bank, "heldout", MixerConfig(2, 2, 15, 20, snr_db=(25, 30)))
    rng = np.random.default_rng(3)
    sources = []
    for i in range(16):
        conv = mixer.sample(rng)
        audio, likes = conv.audio, list(conv.likes)
        if i < 8:
            picks = rng.choice(len(phrases), 3, replace=False)
            gap = np.zeros(int(0.3 * 16000), np.float32)
            real = np.concatenate([np.concatenate([phrases[k] * 0.5, gap]) for k in picks])
            cut = int(rng.uniform(0.3, 0.7) * len(audio))
            audio = np.concatenate([audio[:cut], gap, real, audio[cut:]])
            likes.append("alsa-real-man")
        path = tmp / f"real_{i:02d}.flac"
        sf.write(str(path), audio, 16000)
        sources.append(AudioSource(path, tuple(likes)))
    return sources


def score(store: Store, sets_by_path: dict, sources) -> dict:
    likes = {str(s.path.resolve()): set(s.likes) for s in sources}
    precision = []
    for s in sources[:8]:
        q = sets_by_path[str(s.path.resolve())]
        top = query_store(store, q, k=7)
        precision.append(np.mean(["alsa-real-man" in likes[m.file] for m in top]))
    return {"precision@7_real_man": round(float(np.mean(precision)), 4), "chance": round(7 / 15, 4)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    if not ALSA.exists():
        raise SystemExit(f"{ALSA} missing: apt-get install alsa-utils")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sources = build(tmp)
        embedder = Embedder.load(args.model)
        store = Store(tmp / "w", create=True)
        add_files(store, embedder, sources)
        sets = {str(s.path.resolve()): store.embedding_set(store.file_id(s.path)) for s in sources}
        print(json.dumps({"embedder": f"weighter {embedder.model_id}"} | score(store, sets, sources)))
        try:
            from weighter.baselines import classic_set, resemblyzer_windows

            windows = resemblyzer_windows()
        except ImportError:
            print(json.dumps({"embedder": "classic-resemblyzer", "skipped": "resemblyzer not installed"}))
            return
        store = Store(tmp / "r", create=True)
        built = [classic_set(s.path, windows, 0.4, "classic-resemblyzer") for s in sources]
        with store.writing():
            store.apply([(b, str(i)) for i, b in enumerate(built)])
        sets = {str(Path(b.path).resolve()): b for b in built}
        print(json.dumps({"embedder": "classic-resemblyzer (threshold 0.4)"} | score(store, sets, sources)))


if __name__ == "__main__":
    main()
