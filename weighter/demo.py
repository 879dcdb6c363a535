"""The main job on the embedded default, end to end (``make demo``).

What exists so far: the utterance bank (built once, cached), a held-out demo corpus mixed from
it, and the audio reader's view of that corpus. Later steps (embed, index, query, cluster)
join here as they land.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

from weighter.audio import discover, scan_audio
from weighter.corpus import BankSpec, MixerConfig, open_or_build_bank, write_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo"))
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    started = time.time()
    print("== 1. utterance bank (TTS, cached after the first run)")
    bank = open_or_build_bank(BankSpec(), progress=sys.stderr.isatty())
    summary = bank.summary()
    print(f"   {summary['directory']}: {summary['identities']} identities {summary['per_split']}, "
          f"{summary['audio_seconds'] / 60:.0f} min of clips; distinctness check: clip accuracy "
          f"{summary['check']['clip_accuracy']}, {len(summary['check']['confused_pairs'])} confused pairs, "
          f"rejected {summary['check'].get('rejected', [])}")
    for split, persons in bank.split_table().items():
        print(f"   {split:>10}: {len(persons)} persons, e.g. {', '.join(persons[:6])}")

    corpus = args.out / "corpus"
    shutil.rmtree(corpus, ignore_errors=True)
    print(f"\n== 2. held-out demo corpus -> {corpus}")
    info = write_corpus(bank, corpus, "heldout", args.files, MixerConfig(overlap=0.1, telephone=0.2),
                        seed=args.seed, progress=False)
    print(f"   {info['files']} files, {info['audio_seconds'] / 60:.1f} min, {info['speakers_heard']} held-out "
          f"speakers never seen in training, {info['channels']['telephone']} over a telephone channel")

    print("\n== 3. what the audio reader sees (manifest.csv, reference.rttm)")
    counts = Counter()
    for source in discover(corpus / "manifest.csv"):
        stats = scan_audio(source.path)
        counts[len(source.likes)] += 1
        print(f"   {source.path.name}  {stats.duration:5.1f} s  {stats.rms_db:6.1f} dBFS  likes: {', '.join(source.likes)}")
    print(f"   speakers per file: {dict(sorted(counts.items()))}")
    print(f"\ndone in {time.time() - started:.0f} s; corpus in {corpus}/ "
          "(manifest.csv, reference.rttm, speakers.json, audio/)")


if __name__ == "__main__":
    main()
