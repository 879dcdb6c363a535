"""Which part of a recording channel hurts a speaker encoder, and by how much?

Mixes one corpus of conversations from the real recordings of one split (default
*validation*: never the report split), 1-3 speakers, 10-40 s, dry; then hears the same
conversations through one factor of the evaluation channel at a time (``weighter.corpus.
channels`` and the mixer's ``channel``: coloured noise, babble, a non-speech sound, the
microphone's band and colour, a room, a telephone line with mu-law or GSM) and through the whole
per-file channel. Per model and factor it prints the frontend's ceiling: each true speaker's
turns (RTTM) pooled into one embedding per speaker per file, files ranked by their best pair
(mAP), so the weighting and calibration play no part.

``--compensate lda:D|wccn`` measures a linear channel compensation of the embeddings instead
(a route of issue "One voice through any channel"): LDA to D dimensions, or WCCN, fitted on the
window embeddings of the *train* speakers (TTS bank and real recordings) heard clean and
through two training channels each (``weighter.training.augment``).

    python benchmarks/channel_factors.py [MODEL ...] [--split validation] [--files 60] [--compensate lda:64]

MODEL: model files, or ``default`` for the shipped one. Prints one line per factor.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from weighter.corpus import ConversationMixer, MixerConfig
from weighter.corpus.channels import equaliser, microphone, telephone
from weighter.corpus.recordings import RecordingBank
from weighter.corpus.rooms import room_responses
from weighter.corpus.sounds import coloured_noise, nonspeech
from weighter.embedder import Embedder
from weighter.evaluation import mean_average_precision

VOICES = Path(__file__).resolve().parents[2] / "shared" / "real-speech" / "librispeech"
DRY = MixerConfig(1, 3, 10, 40, overlap=0.1, snr_db=None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=["default"])
    parser.add_argument("--voices", type=Path, default=VOICES)
    parser.add_argument("--split", default="validation",
                        help="speakers to mix: a split, or splits joined by + (e.g. train+validation: more voices)")
    parser.add_argument("--factors", nargs="*", default=None, help="only these factors (names as printed)")
    parser.add_argument("--files", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compensate", default=None, help="lda:D or wccn, fitted on train speakers")
    args = parser.parse_args()
    bank = RecordingBank(args.voices)
    if "heldout" in args.split.split("+"):
        raise SystemExit("channel_factors.py is for choosing: it never mixes the report split (heldout)")
    bank = Splits(bank, args.split.split("+")) if "+" in args.split else bank
    embedders = {m: Embedder.load(None if m == "default" else m) for m in args.models}
    projections = {m: fit_compensation(e.model, args.compensate, bank) for m, e in embedders.items()} \
        if args.compensate else {m: None for m in args.models}
    mixer = ConversationMixer(bank, args.split, DRY)
    rng = np.random.default_rng(args.seed)
    dry = [mixer.sample(rng) for _ in range(args.files)]
    recorded = ConversationMixer(bank, args.split, MixerConfig(1, 3, 10, 40, overlap=0.1, channel=1.0))
    # the whole per-file channel, on a corpus of its own of the same split and size
    whole = [recorded.sample(np.random.default_rng([args.seed, i])) for i in range(args.files)]
    rows = {"whole channel": whole}
    for name, factor in factors(mixer).items():
        if args.factors and name not in args.factors:
            continue
        r = np.random.default_rng([args.seed, 1])
        rows[name] = [replace_audio(c, factor(c, r)) for c in dry]
    for name, convs in rows.items():
        if args.factors and name not in args.factors:
            continue
        figures = {m: ceiling(e.model, convs, projections[m]) for m, e in embedders.items()}
        print(json.dumps({"factor": name, "split": args.split, "files": args.files,
                          "compensate": args.compensate} | figures), flush=True)


class Splits:
    """A bank whose split ``"a+b"`` holds the speakers of its splits a and b together."""

    def __init__(self, bank, names):
        self.bank, self.names = bank, names

    def identities(self, split=None, include_rejected=False):
        if split is not None and "+" in split:
            return sorted(s for name in split.split("+") for s in self.bank.identities(name))
        return self.bank.identities(split)

    def __getattr__(self, name):
        return getattr(self.bank, name)


def factors(mixer) -> dict:
    """Each factor of the evaluation channel alone: conversation, rng -> audio."""
    def band(x, r):
        from scipy.signal import butter, sosfilt

        low, high = r.uniform(50, 250), r.uniform(3500, 7500)
        return sosfilt(butter(int(r.integers(1, 3)) * 2, [low, high], btype="bandpass", fs=16000, output="sos"), x)

    def babble(c, r):  # 4 other speakers of the split talking on
        return mixer.babble(r, len(c.audio), c.likes, 4)

    return {
        "clean": lambda c, r: c.audio,
        "coloured noise 5-30 dB": lambda c, r: _add(c.audio, coloured_noise(r, len(c.audio), r.uniform(0, 2)), r.uniform(5, 30)),
        "babble 5-30 dB": lambda c, r: _add(c.audio, babble(c, r), r.uniform(5, 30)),
        "babble 15-30 dB": lambda c, r: _add(c.audio, babble(c, r), r.uniform(15, 30)),
        "sound 5-30 dB": lambda c, r: _add(c.audio, nonspeech(r, len(c.audio))[0], r.uniform(5, 30)),
        "microphone": lambda c, r: microphone(c.audio, 16000, r),
        "colour only": lambda c, r: equaliser(c.audio, 16000, r),
        "band only": lambda c, r: band(c.audio, r),
        "room": lambda c, r: np.convolve(c.audio, room_responses(r, 1)[0])[: len(c.audio)],
        "telephone mu-law": lambda c, r: telephone(c.audio, 16000, "mu-law"),
        "telephone gsm": lambda c, r: telephone(c.audio, 16000, "gsm"),
    }


def _add(x, noise, snr):
    return x + noise * np.sqrt(np.mean(x ** 2) / 10 ** (snr / 10) / (np.mean(noise ** 2) + 1e-20))


def replace_audio(c, audio):
    return type(c)(np.asarray(audio, np.float32), c.sample_rate, c.segments, c.likes, c.channel, c.snr_db)


@torch.no_grad()
def ceiling(model, convs, projection=None) -> float:
    """mAP of files ranked by their best pair of per-speaker embeddings (true turns pooled)."""
    per = []
    for c in convs:
        frames = model.frames(torch.from_numpy(c.audio)[None])
        w = torch.zeros(1, len(c.likes), frames.shape[1])
        for seg in c.segments:
            w[0, c.likes.index(seg.speaker), int(seg.start * 100): int(np.ceil(seg.end * 100))] = 1
        e = torch.einsum("bnt,btc->bnc", w / w.sum(2, keepdim=True).clamp(min=1), frames)[0].numpy()
        if projection is not None:
            e = (e - projection[1]) @ projection[0]
        per.append(e / np.linalg.norm(e, axis=1, keepdims=True))
    n = len(per)
    scores, shared = np.full((n, n), -np.inf), np.zeros((n, n), bool)
    for i in range(n):
        for j in range(n):
            if i != j:
                scores[i, j] = (per[i] @ per[j].T).max()
                shared[i, j] = bool(set(convs[i].likes) & set(convs[j].likes))
    return round(mean_average_precision(scores, shared), 4)


def fit_compensation(model, kind: str, real) -> tuple[np.ndarray, np.ndarray]:
    """LDA (``lda:D``) or WCCN (``wccn``) of the model's window embeddings, fitted on the train
    speakers of the TTS bank and of ``real``, each clip heard clean and through two training
    channels: (projection (256, D), mean (256,))."""
    from scipy.linalg import eigh

    from weighter.corpus import UtteranceBank
    from weighter.corpus.bank import BankSpec, default_bank_dir
    from weighter.training.cached import Source, default_augmenter
    from weighter.training.distill import embed_windows, encoder_mel

    tts = UtteranceBank(default_bank_dir(BankSpec()))
    augmenter = default_augmenter([Source(real, "train"), Source(tts, "train")], 0)
    encoder = model.frozen.encoder
    rng = np.random.default_rng(0)
    vectors, labels = [], []
    for bank in (real, tts):
        for speaker in bank.identities("train"):
            clips = bank.clips(speaker)
            for _ in range(3):
                parts, total, k = [], 0, int(rng.integers(len(clips)))
                while total < 102_400:  # 6.4 s of the speaker
                    parts.append(clips[k % len(clips)].astype(np.float32) / 32768)
                    total, k = total + len(parts[-1]), k + 1
                x = np.concatenate(parts)[:102_400]
                x = x / max(np.abs(x).max(), 1e-9) * 0.5
                waves = np.stack([x] + [augmenter(x, rng)[0] for _ in range(2)])
                e = embed_windows(encoder, encoder_mel(torch.from_numpy(waves)), 50).reshape(-1, 256).numpy()
                vectors.append(e)
                labels += [f"{bank.directory}:{speaker}"] * len(e)
    X, y = np.concatenate(vectors), np.array(labels)
    mean = X.mean(0)
    classes = np.unique(y)
    means = np.stack([X[y == c].mean(0) for c in classes])
    within = sum((X[y == c] - m).T @ (X[y == c] - m) for c, m in zip(classes, means)) / len(X) + 1e-4 * np.eye(256)
    if kind == "wccn":
        return np.linalg.cholesky(np.linalg.inv(within)).astype(np.float32), np.zeros(256, np.float32)
    between = (means - mean).T @ (means - mean) / len(classes)
    values, vecs = eigh(between, within)
    dims = int(kind.split(":")[1])
    return vecs[:, np.argsort(-values)[:dims]].astype(np.float32), mean.astype(np.float32)


if __name__ == "__main__":
    main()
