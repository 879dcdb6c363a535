"""Writing a mixed corpus to disk: FLAC files, manifest.csv, reference.rttm, speakers.json.

Same bank, config and seed give the same bytes: file i is mixed from its own child of the
seed (``SeedSequence(seed).spawn``), FLAC is written as 16-bit PCM without dither.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from weighter.audio.sources import AudioSource, write_manifest
from weighter.corpus.bank import UtteranceBank
from weighter.corpus.mixer import ConversationMixer, MixerConfig, write_rttm
from weighter.errors import CorpusError


def write_corpus(bank: UtteranceBank, out: str | Path, split: str, files: int, config: MixerConfig,
                 seed: int = 0, progress: bool = True) -> dict:
    """Mix ``files`` conversations from ``split`` into ``out``; returns a summary."""
    out = Path(out)
    if (out / "manifest.csv").exists() or (out / "audio").exists():
        raise CorpusError(f"{out}: already holds a corpus (choose an empty directory)")
    if files < 1:
        raise CorpusError(f"files {files}: must be at least 1")
    mixer = ConversationMixer(bank, split, config)
    audio_dir = out / "audio"
    audio_dir.mkdir(parents=True)
    rows, seconds, channels = [], 0.0, {"clean": 0, "telephone": 0, "reverberant": 0}
    children = np.random.SeedSequence(seed).spawn(files)
    try:
        with open(out / "reference.rttm", "w") as rttm:
            for i in tqdm(range(files), disable=not progress, desc=f"mixing {split}", unit="file"):
                conv = mixer.sample(np.random.default_rng(children[i]))
                file_id = f"conv_{i:05d}"
                path = audio_dir / f"{file_id}.flac"
                sf.write(str(path), conv.audio, conv.sample_rate, subtype="PCM_16", format="FLAC")
                write_rttm(rttm, file_id, conv.segments)
                rows.append(AudioSource(path, conv.likes))
                seconds += conv.duration
                channels[conv.channel] = channels.get(conv.channel, 0) + 1
                channels["reverberant"] += conv.reverb
                if conv.distortion:
                    channels[conv.distortion] = channels.get(conv.distortion, 0) + 1
    except BaseException:
        shutil.rmtree(audio_dir, ignore_errors=True)  # no half corpus that looks complete
        (out / "reference.rttm").unlink(missing_ok=True)
        raise
    write_manifest(out / "manifest.csv", rows)
    identities = {i: {k: bank.identity(i)[k] for k in ("engine", "voice", "person", "pitch", "split")}
                  for i in bank.identities()}
    used = sorted({like for r in rows for like in r.likes})
    summary = {"files": files, "split": split, "seed": seed, "audio_seconds": round(seconds, 2),
               "speakers_heard": len(used), "channels": channels, "bank": str(bank.directory),
               "mixer": asdict(config)}
    (out / "speakers.json").write_text(json.dumps(
        {"split": split, "speakers": used, "splits": bank.split_table(), "identities": identities,
         "corpus": summary}, indent=1))
    return summary
