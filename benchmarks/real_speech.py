"""How well does weighter work on real people it never trained or tuned on?

Mixes conversations of the real LibriSpeech readers in ../shared/real-speech/librispeech (or
any folder of SPEAKER/*.flac, ``--voices``) from the speakers of one split (default: heldout,
the report split: docs/real-speech.md): 1-3 speakers, 10-40 s, turn-taking, 10% overlapping
turns, in three conditions (``--conditions``, all by default):

- ``noise``: background noise (white, pink or brown) at 10-30 dB SNR and a telephone band with
  mu-law on 20% of files, as the synthetic corpus;
- ``channels``: each file through its own recording channel (``MixerConfig.channel``): a room
  on half of them, coloured noise, a non-speech sound or babble of other report speakers at
  5-30 dB SNR, a microphone's band and colour, a telephone line with a mu-law, A-law or GSM
  codec on 40%, a level; none of it is what training augments with (other noises, rooms and
  codecs: weighter.training.augment);
- ``clean``: neither noise nor telephone.

Then, per corpus, on the same files in the same run:

- the Weighter model (default or ``--model``): store, queries, clustering (the library's
  defaults), and every figure of ``weighter.evaluation.evaluate_store``; count errors by kind
  (over / under); the expected calibration error of the query probability ``p`` over the
  top-10 results of every query (10 equal bins);
- the ceiling for the model's frontend: each true speaker's turns (from the RTTM) pooled into
  one embedding per speaker per file, files ranked by their best pair (mAP);
- the classic pipeline (``weighter.baselines``: Resemblyzer's 1.6-s windows, per-file
  agglomerative clustering with its distance threshold calibrated on the *validation*
  speakers, the same store and clustering).

    python benchmarks/real_speech.py [--model M] [--files 60] [--seeds 0 1 2] [--conditions noise channels clean]
                                     [--baselines classic-resemblyzer]

Prints one JSON line per corpus and one per condition with the mean, min and max over its corpora.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import classic_figures, clustered_figures, corpus_truth, indexed_store, mean_min_max
from weighter.audio import load_audio
from weighter.corpus import MixerConfig, write_corpus
from weighter.corpus.recordings import RecordingBank
from weighter.embedder import Embedder
from weighter.evaluation import mean_average_precision

VOICES = Path(__file__).resolve().parents[2] / "shared" / "real-speech" / "librispeech"
# Real conversations as the real corpus: 1-3 speakers, 10-40 s, in three conditions.
CONDITIONS = {
    "noise": MixerConfig(1, 3, 10.0, 40.0, overlap=0.1, telephone=0.2),
    "channels": MixerConfig(1, 3, 10.0, 40.0, overlap=0.1, channel=1.0),
    "clean": MixerConfig(1, 3, 10.0, 40.0, overlap=0.1, telephone=0.0, snr_db=None),
}
VAL_FILES = 40  # validation-speaker files that calibrate the classic pipeline's threshold
SUMMARISED = ("count_accuracy", "over", "under", "map", "recall@1", "slot_eer", "der", "link_f1", "ari",
              "outlier_share", "ece_top10", "threshold_p_link_f1", "ceiling_map")


def corpus_arguments(description: str) -> argparse.ArgumentParser:
    """The options of a benchmark over real-speech corpora (this one's and enrolment.py's):
    model, voices, split, files, seeds, conditions, JSON output, the encoder's precision."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default=None, help="model file (default: the shipped model)")
    parser.add_argument("--voices", type=Path, default=VOICES, help="folder of SPEAKER/*.flac recordings")
    parser.add_argument("--split", default="heldout", help="the speakers to report on (train/validation/heldout)")
    parser.add_argument("--files", type=int, default=60, help="conversations per corpus")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one corpus per seed")
    parser.add_argument("--conditions", nargs="+", choices=list(CONDITIONS), default=list(CONDITIONS),
                        help="which conditions to mix (default: all three)")
    parser.add_argument("--json", dest="json_out", default=None)
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="the speaker encoder's number format (Embedder's precision)")
    return parser


def checked_voices(args) -> Path:
    """``--voices``, or exit with the reason where it is no folder."""
    if not args.voices.is_dir():
        raise SystemExit(f"{args.voices}: no such folder of real recordings (see ../shared/real-speech/README.md)")
    return args.voices


def main():
    parser = corpus_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--baselines", nargs="*", default=["classic-resemblyzer"],
                        help="classic-resemblyzer and/or classic-weighter (none: skip)")
    args = parser.parse_args()
    bank = RecordingBank(checked_voices(args))
    embedder = Embedder.load(args.model, precision=args.precision)
    results, summaries = [], []
    for condition in args.conditions:
        rows = []
        for seed in args.seeds:
            rows.append({"condition": condition} | score(bank, embedder, args.split, args.files, seed, args.baselines,
                                                          CONDITIONS[condition]))
            print(json.dumps(rows[-1]), flush=True)
        summary = {"condition": condition, "split": args.split, "speakers": len(bank.identities(args.split)),
                   "seeds": args.seeds, "files_each": args.files, "model_id": embedder.model_id,
                   "precision": embedder.precision} | stats(rows)
        for name in args.baselines:
            summary[name] = stats([r[name] for r in rows])
        print(json.dumps(summary), flush=True)
        results += rows
        summaries.append(summary)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"corpora": results, "summaries": summaries}, indent=1))


def stats(rows: list[dict]) -> dict:
    rows = [r | {"link_f1": r["linking"]["f1"]} for r in rows]
    keys = [k for k in SUMMARISED if all(k in r for r in rows)]
    return mean_min_max(rows, keys)


def score(bank, embedder, split: str, files: int, seed: int, baselines: list[str], mix: MixerConfig) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_corpus(bank, tmp / "corpus", split, files, mix, seed=seed, progress=False)
        sources, rttm = corpus_truth(tmp / "corpus")
        started = time.perf_counter()
        store = indexed_store(embedder, sources, tmp / "store")
        seconds = time.perf_counter() - started
        result = {"seed": seed, "files": files} | clustered_figures(store, sources, rttm)
        ece, table, threshold = calibration_error(store, sources)
        result |= count_errors(store, sources) | {"ece_top10": ece, "reliability_top10": table,
                                                   "threshold_p_link_f1": threshold}
        result["ceiling_map"] = ceiling(embedder, sources, rttm)
        audio = sum(load_audio(s.path).shape[0] for s in sources) / 16000
        result["embed_x_realtime"] = round(audio / seconds, 1)
        for name in baselines:
            result[name] = classic(name, embedder, bank, sources, rttm, tmp, seed, mix)
    return result


def count_errors(store, sources) -> dict:
    """Files whose active slots are more (over) or fewer (under) than their speakers, as shares."""
    over = under = 0
    for s in sources:
        active = int(store.embedding_set(store.file_id(s.path)).active.sum())
        over += active > len(s.likes)
        under += active < len(s.likes)
    return {"over": round(over / len(sources), 4), "under": round(under / len(sources), 4)}


def calibration_error(store, sources, k: int = 10, bins: int = 10, link: float = 0.5):
    """The query probability ``p`` against the truth: expected calibration error over the top-k
    results of every file's query (the results binned by p, each bin's |mean p - share that
    truly share a speaker| weighted by its size), the reliability table of those bins (count,
    mean p, share true), and the file-pair link F1 of "thresholded p": two files linked where
    either's query gives the other p >= ``link`` (no clustering, no transitivity). (None, None,
    None) for a model without p."""
    from weighter.evaluation import linking_f1
    from weighter.index import query_store

    paths = [str(Path(s.path).resolve()) for s in sources]
    likes = dict(zip(paths, (set(s.likes) for s in sources)))
    probs, truth, linked = [], [], set()
    for s, path in zip(sources, paths):
        query = store.embedding_set(store.file_id(s.path))
        for rank, m in enumerate(query_store(store, query, k=len(sources))):
            if m.probability is None:
                return None, None, None
            other = str(Path(m.file).resolve())
            if m.probability >= link:
                linked.add(frozenset((path, other)))
            if rank < k:
                probs.append(m.probability)
                truth.append(bool(likes[path] & likes[other]))
    probs, truth = np.array(probs), np.array(truth, float)
    which = np.minimum((probs * bins).astype(int), bins - 1)
    table = [{"bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}", "count": int((which == b).sum()),
              "mean_p": round(float(probs[which == b].mean()), 4), "share_true": round(float(truth[which == b].mean()), 4)}
             for b in range(bins) if (which == b).any()]
    error = sum(abs(probs[which == b].mean() - truth[which == b].mean()) * (which == b).sum()
                for b in range(bins) if (which == b).any()) / len(probs)
    groups = [{i for i, pair in enumerate(linked) if path in pair} for path in paths]  # a link = a shared "group"
    return round(float(error), 4), table, linking_f1(groups, [likes[p] for p in paths])["f1"]


@torch.no_grad()
def ceiling(embedder, sources, rttm) -> float:
    """mAP with perfect who-speaks-when: each true speaker's frames (RTTM) pooled by the model
    into one embedding per speaker per file; files ranked by their best pair."""
    model = embedder.model
    per_file = []
    for s in sources:
        wave = torch.from_numpy(load_audio(s.path))[None]
        frames = model.frames(wave)  # (1, T, Cf)
        t = frames.shape[1]
        weights = torch.zeros(1, len(s.likes), t)
        for start, end, speaker in rttm.get(Path(s.path).stem, []):
            if speaker in s.likes:
                row = s.likes.index(speaker)
                weights[0, row, int(start * model.frame_rate): int(np.ceil(end * model.frame_rate))] = 1.0
        weights = weights / weights.sum(2, keepdim=True).clamp(min=1)
        per_file.append(model.pool(weights, frames)[0].numpy())
    n = len(per_file)
    scores, shared = np.full((n, n), -np.inf), np.zeros((n, n), bool)
    for i in range(n):
        for j in range(n):
            if i != j:
                scores[i, j] = float((per_file[i] @ per_file[j].T).max())
                shared[i, j] = bool(set(sources[i].likes) & set(sources[j].likes))
    return round(mean_average_precision(scores, shared), 4)


def classic(name, embedder, bank, sources, rttm, tmp, seed, mix) -> dict:
    """The diarize-then-link pipeline, its threshold calibrated on the validation speakers."""
    from weighter.baselines import resemblyzer_windows, weighter_windows

    windows = weighter_windows(embedder.model) if name == "classic-weighter" else resemblyzer_windows()
    write_corpus(bank, tmp / f"val-{name}", "validation", VAL_FILES, mix, seed=seed + 100, progress=False)
    val_sources, _ = corpus_truth(tmp / f"val-{name}")
    figures, store = classic_figures(name, windows, val_sources, sources, rttm, tmp / f"store-{name}")
    return figures | count_errors(store, sources)


if __name__ == "__main__":
    main()
