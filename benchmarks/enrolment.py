"""How well does a named speaker find the files where that person is heard?

For each condition of ``benchmarks/real_speech.py`` (noise, channels, clean) and seed: a corpus
of conversations among the report-split (heldout) LibriSpeech readers, mixed as there, except
that each enrolled speaker's last two ~4-s clips of recording are held back from the mixer.
The enrolled speakers are those whose one recording cuts into at least four clips (the corpus
keeps two or more of theirs); the others are heard in the corpus but not enrolled.

Each enrolled speaker is enrolled from the held-back speech (5-11 s) as 1, 2 or 3 clips (the
same speech cut in equal parts), each clip through its own recording chain drawn as the
condition draws a file's (``ConversationMixer.record``: none for clean), then searched for by
name (``weighter.index.speakers.query_speaker``) over every file of the corpus. Reported: mAP
and recall@1 over the files where the speaker is heard, the enrolments refused (no active
slot in a clip: scored as finding nothing), and beside them in the same run

- the same store's file-query mAP (every file queries the others: ``weighter query FILE``);
- the classic pipeline: the mean Resemblyzer embedding of the clips (each clip the mean of its
  1.6-s windows), cosine to each file's clustered segments (``weighter.baselines``, its
  distance threshold calibrated on validation-speaker files), a file scored by its best segment.

    python benchmarks/enrolment.py [--model M] [--files 60] [--seeds 0 1 2] [--conditions noise channels clean]

Prints one JSON line per corpus and one per condition (mean, min and max over its corpora).
"""

import json
import tempfile
from pathlib import Path

import numpy as np

from common import corpus_truth, indexed_store, mean_min_max
from real_speech import CONDITIONS, VAL_FILES, checked_voices, corpus_arguments
from weighter.corpus import ConversationMixer, write_corpus
from weighter.corpus.mixer import Segment
from weighter.corpus.recordings import RecordingBank
from weighter.embedder import Embedder
from weighter.errors import AudioError
from weighter.evaluation import evaluate_store, mean_average_precision, recall_at
from weighter.index.speakers import enrol, query_speaker

HELD_CLIPS = 2  # clips of each enrolled speaker's recording kept out of the corpus
MIN_CLIPS = 4  # enrolled: speakers whose recording cuts into at least this many clips
CLIP_COUNTS = (1, 2, 3)


class HeldBack:
    """A recording bank whose enrolled speakers' last ``HELD_CLIPS`` clips are kept out of
    every conversation (``held`` gives them); all else is the bank's."""

    def __init__(self, bank: RecordingBank, split: str):
        self.bank = bank
        self.enrolled = [s for s in bank.identities(split) if len(bank.clips(s)) >= MIN_CLIPS]

    def __getattr__(self, name):
        return getattr(self.bank, name)

    def clips(self, identity: str) -> list[np.ndarray]:
        clips = self.bank.clips(identity)
        return clips[:-HELD_CLIPS] if identity in self.enrolled else clips

    def held(self, identity: str) -> np.ndarray:
        """The held-back speech, float32 at 16 kHz, the clips one after another."""
        return np.concatenate(self.bank.clips(identity)[-HELD_CLIPS:]).astype(np.float32) / 32768


def main():
    parser = corpus_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--no-classic", action="store_true", help="skip the classic pipeline")
    args = parser.parse_args()
    bank = HeldBack(RecordingBank(checked_voices(args)), args.split)
    embedder = Embedder.load(args.model, precision=args.precision)
    windows = None
    if not args.no_classic:
        from weighter.baselines import resemblyzer_windows

        windows = resemblyzer_windows()
    results, summaries = [], []
    for condition in args.conditions:
        rows = []
        for seed in args.seeds:
            rows.append({"condition": condition} | score(bank, embedder, windows, args.split, args.files, seed,
                                                          condition))
            print(json.dumps(rows[-1]), flush=True)
        keys = ["file_query_map"] + [f"{who}_{n}_{m}" for who in ("weighter", "classic") if windows or who == "weighter"
                                     for n in CLIP_COUNTS for m in ("map", "recall@1")]
        summary = {"condition": condition, "split": args.split, "enrolled": len(bank.enrolled),
                   "seeds": args.seeds, "files_each": args.files, "model_id": embedder.model_id} | mean_min_max(rows, keys)
        print(json.dumps(summary), flush=True)
        results += rows
        summaries.append(summary)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"corpora": results, "summaries": summaries}, indent=1))


def score(bank: HeldBack, embedder, windows, split: str, files: int, seed: int, condition: str) -> dict:
    mix = CONDITIONS[condition]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_corpus(bank, tmp / "corpus", split, files, mix, seed=seed, progress=False)
        sources, _ = corpus_truth(tmp / "corpus")
        store = indexed_store(embedder, sources, tmp / "store")
        heard = [s for s in bank.enrolled if any(s in src.likes for src in sources)]
        shared = np.array([[s in src.likes for src in sources] for s in heard])  # (speakers, files)
        paths = [str(Path(src.path).resolve()) for src in sources]
        clips = enrolment_clips(bank, heard, mix, split, seed)
        segments = None if windows is None else classic_segments(bank, windows, sources, mix, seed, tmp)
        result = {"seed": seed, "files": files, "speakers_scored": len(heard),
                  "file_query_map": evaluate_store(store, sources)["map"]}
        for n in CLIP_COUNTS:
            scores, refused = np.full(shared.shape, -np.inf), 0
            for row, speaker in enumerate(heard):
                sets = [embedder.embed_audio(c, name=f"{speaker}-clip{k}") for k, c in enumerate(clips[speaker][n])]
                try:
                    enrol(store, f"{speaker}/{n}", sets)
                except AudioError:
                    refused += 1  # nothing to search with: every file stays at -inf
                    continue
                for m in query_speaker(store, f"{speaker}/{n}", k=files):
                    scores[row, paths.index(str(Path(m.file).resolve()))] = m.score
            result |= figures(f"weighter_{n}", scores, shared) | {f"weighter_{n}_refused": refused}
            if windows is not None:
                result |= figures(f"classic_{n}", classic_scores(windows, heard, clips, n, segments), shared)
        store.close()
    return result


def enrolment_clips(bank: HeldBack, speakers: list[str], mix, split: str, seed: int) -> dict:
    """speaker -> clip count -> that many clips: the held-back speech cut in equal parts, each
    through its own recording chain as the condition draws a file's."""
    mixer = ConversationMixer(bank, split, mix)
    out = {}
    for k, speaker in enumerate(speakers):
        speech = bank.held(speaker)
        out[speaker] = {}
        for n in CLIP_COUNTS:
            rng = np.random.default_rng([seed, k, n, 7])
            parts = np.array_split(speech, n)
            out[speaker][n] = [mixer.record(rng, part[None], [speaker], [Segment(0.0, len(part) / 16000, speaker)],
                                            (speaker,)).audio for part in parts]
    return out


def classic_segments(bank, windows, sources, mix, seed: int, tmp: Path) -> list[np.ndarray]:
    """Each corpus file's clustered segments in the classic pipeline (its active slots), the
    clustering threshold calibrated on validation-speaker files of the same condition."""
    from weighter.baselines import calibrate_distance, classic_set

    write_corpus(bank, tmp / "val", "validation", VAL_FILES, mix, seed=seed + 100, progress=False)
    val_sources, _ = corpus_truth(tmp / "val")
    threshold, _ = calibrate_distance([(s.path, s.likes) for s in val_sources], windows)
    sets = [classic_set(s.path, windows, threshold, "classic") for s in sources]
    return [s.embeddings[s.active] for s in sets]


def classic_scores(windows, speakers, clips, n: int, segments: list[np.ndarray]) -> np.ndarray:
    """(speakers, files): cosine of the mean Resemblyzer embedding of a speaker's ``n`` clips
    (each clip the unit mean of its windows) to each file's best clustered segment."""
    out = np.full((len(speakers), len(segments)), -np.inf)
    for row, speaker in enumerate(speakers):
        per_clip = [windows(c).mean(0) for c in clips[speaker][n]]
        mean = np.mean([v / np.linalg.norm(v) for v in per_clip], 0)
        mean /= np.linalg.norm(mean)
        out[row] = [float((seg @ mean).max()) if len(seg) else -np.inf for seg in segments]
    return out


def figures(prefix: str, scores: np.ndarray, shared: np.ndarray) -> dict:
    """mAP and recall@1 of speaker rows over files (a dropped column: evaluation's rankings
    leave the query's own column, at -inf, out)."""
    scores = np.hstack([scores, np.full((len(scores), 1), -np.inf)])
    shared = np.hstack([shared, np.zeros((len(shared), 1), bool)])
    return {f"{prefix}_map": round(mean_average_precision(scores, shared), 4),
            f"{prefix}_recall@1": round(recall_at(scores, shared, 1), 4)}


if __name__ == "__main__":
    main()
