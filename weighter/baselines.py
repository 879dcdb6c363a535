"""The classic diarize-then-link pipeline, as a baseline for the Weighter (same store, same
clustering, same figures).

Per file: embeddings of sliding windows (1.6 s, every 0.5 s) -> agglomerative clustering of the
windows (cosine, average linkage, a distance threshold) -> one centroid per cluster = the
file's embedding set, the clusters' window memberships = its weightings timeline. Window
embedders: the Weighter model's own pooling with every frame weighted alike, or Resemblyzer's
pretrained speaker encoder (optional package) as an external peer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from weighter.audio import SAMPLE_RATE, load_audio
from weighter.embedding_set import EmbeddingSet

WINDOW = 1.6  # seconds
HOP = 0.5  # seconds
TIMELINE_RATE = 10.0  # Hz, as the embedder's


def window_starts(samples: int) -> np.ndarray:
    """Start samples of the WINDOW-long windows, HOP apart, over a signal of ``samples``."""
    win, hop = int(WINDOW * SAMPLE_RATE), int(HOP * SAMPLE_RATE)
    return np.arange(0, max(samples - win, 0) + 1, hop)


def weighter_windows(model) -> Callable[[np.ndarray], np.ndarray]:
    """Window embeddings from a Weighter model: all frames of the window weighted alike."""
    win = int(WINDOW * SAMPLE_RATE)

    @torch.no_grad()
    def embed(audio: np.ndarray) -> np.ndarray:
        starts = window_starts(len(audio))
        batch = np.stack([np.pad(audio[s:s + win], (0, max(0, win - len(audio[s:s + win])))) for s in starts])
        out = [model.mean_embedding(torch.from_numpy(batch[i:i + 256])).numpy() for i in range(0, len(batch), 256)]
        return np.concatenate(out)

    return embed


def resemblyzer_windows() -> Callable[[np.ndarray], np.ndarray]:
    """Window embeddings from Resemblyzer's pretrained speaker encoder (unit length)."""
    from resemblyzer import VoiceEncoder
    from resemblyzer.audio import wav_to_mel_spectrogram

    encoder = VoiceEncoder("cpu", verbose=False)
    win = int(WINDOW * SAMPLE_RATE)

    @torch.no_grad()
    def embed(audio: np.ndarray) -> np.ndarray:
        starts = window_starts(len(audio))
        mels = np.stack([wav_to_mel_spectrogram(np.pad(audio[s:s + win], (0, max(0, win - len(audio[s:s + win])))))
                         for s in starts])
        out = encoder(torch.from_numpy(mels)).numpy()
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    return embed


def classic_set(path: str | Path, embed_windows, distance_threshold: float, model_id: str,
                min_windows: int = 3, audio: np.ndarray | None = None) -> EmbeddingSet:
    """A classic pipeline's embedding set for one file: voiced window embeddings clustered by
    agglomerative clustering (cosine, average linkage, cut at ``distance_threshold``); one slot
    per cluster, its confidence the cluster's share of windows, active from ``min_windows``."""
    from sklearn.cluster import AgglomerativeClustering

    audio = load_audio(path) if audio is None else audio
    duration = len(audio) / SAMPLE_RATE
    starts = window_starts(len(audio))
    win = int(WINDOW * SAMPLE_RATE)
    energy = np.array([np.sqrt(np.mean(audio[s:s + win] ** 2) + 1e-12) for s in starts])
    voiced = energy > 0.25 * np.median(energy)  # drop near-silent windows
    emb = embed_windows(audio)[voiced]
    kept = starts[voiced]
    if len(emb) >= 2:
        labels = AgglomerativeClustering(n_clusters=None, distance_threshold=distance_threshold, metric="cosine",
                                         linkage="average").fit_predict(emb)
    else:
        labels = np.zeros(len(emb), int)
    steps = int(np.ceil(duration * TIMELINE_RATE))
    centroids, sizes, timelines = [], [], []
    for c in np.unique(labels):
        members = labels == c
        centroid = emb[members].mean(0)
        centroids.append(centroid / np.linalg.norm(centroid))
        sizes.append(int(members.sum()))
        line = np.zeros(steps, np.float32)
        for s in kept[members]:
            a = int(s / SAMPLE_RATE * TIMELINE_RATE)
            line[a:a + int(WINDOW * TIMELINE_RATE)] = 1.0
        timelines.append(line)
    if not centroids:
        centroids, sizes, timelines = [np.zeros(emb.shape[1] if emb.ndim == 2 else 256, np.float32)], [0], [np.zeros(steps)]
    sizes = np.array(sizes)
    confidence = (sizes / max(sizes.sum(), 1)).astype(np.float32)
    active = sizes >= min_windows
    if not active.any():
        active[np.argmax(sizes)] = True
    return EmbeddingSet(str(path), np.stack(centroids).astype(np.float32), confidence, active,
                        np.stack(timelines).astype(np.float32), TIMELINE_RATE, duration, model_id)


def calibrate_distance(paths_likes, embed_windows, grid=(0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)) -> tuple[float, float]:
    """The clustering threshold that best counts speakers on validation files: (threshold, accuracy)."""
    audios = [(load_audio(p), likes) for p, likes in paths_likes]
    windows = [(embed_windows(a), a, likes) for a, likes in audios]
    best = (grid[0], -1.0)
    for t in grid:
        hits = 0
        for emb, audio, likes in windows:
            s = classic_set("<val>", lambda _a, e=emb: e, t, "cal", audio=audio)
            hits += int(s.active.sum()) == len(likes)
        acc = hits / len(windows)
        if acc > best[1]:
            best = (t, acc)
    return best
