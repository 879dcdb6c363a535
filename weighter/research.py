"""The research's claims, measured on its vector simulation.

Setup: each file is T frames of D dimensions, ``speaker vector + N(0, sigma^2 I)``, the active
speaker chosen by the bounded random walk of ``weighter.corpus.vectors`` (its step sets the turn
length). Training speakers and test speakers are two disjoint random pools.

A method *separates* a file when every true speaker is matched one-to-one (Hungarian) by one of
its estimates with cosine >= 0.9; sigma90 is the largest noise at which >= 90% of the test files
are separated. Every estimate is a weighted mean of the file's frames, so the per-speaker mean
under perfect frame labels bounds them all: that is the ``ceiling``.

Methods: k-means with the true k (time-blind); HDBSCAN after PCA-5 (time-blind); k-means on
frames smoothed over a window (time-aware, nothing learnt); the ceiling; and the learned weighter
(``VectorWeighter``: the Weighter block of ``weighter.embedder.model`` on the frames, estimates =
the W-weighted frame means of its top-k slots by confidence), trained from file-level likes alone
or with the frame truth (permutation-matched slot activity).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from weighter.corpus.vectors import draw_turns, speaker_pool
from weighter.training.losses import bce, file_prediction, match_slots, wbce
from weighter.embedder.model import Weighter, WeighterConfig, weigh

SEPARATED_COSINE = 0.9


@dataclass(frozen=True)
class Setting:
    """One vector-simulation setting."""

    dim: int = 32  # D
    frames: int = 300  # T per file
    step: float = 0.1  # random-walk step: 0.1 = the research's recipe (~3-frame runs); smaller = longer turns
    min_speakers: int = 2
    max_speakers: int = 3
    pool: int = 200  # training speakers (test speakers: another pool of the same size)
    min_share: float = 0.05  # a speaker heard in fewer frames is dropped (its frames go to the one before)

    def describe(self) -> str:
        """The setting in one line (dimension, frames, walk step, speakers per file)."""
        return f"D={self.dim}, T={self.frames}, step={self.step}, {self.min_speakers}-{self.max_speakers} speakers"


@dataclass
class Files:
    """Test or training files of one setting, with the noise kept apart (frames = clean + sigma z)."""

    clean: np.ndarray  # (F, T, D)
    z: np.ndarray  # (F, T, D) standard normal
    labels: np.ndarray  # (F, T) speaker index into speakers
    likes: np.ndarray  # (F, P) bool
    speakers: np.ndarray  # (P, D)

    def frames(self, sigma: float) -> np.ndarray:
        """The files' frames at noise ``sigma``: (F, T, D)."""
        return self.clean + sigma * self.z

    def subset(self, keep: np.ndarray) -> "Files":
        """The files selected by ``keep`` (an index or mask over files)."""
        return Files(self.clean[keep], self.z[keep], self.labels[keep], self.likes[keep], self.speakers)

    def truth(self, f: int) -> tuple[np.ndarray, np.ndarray]:
        """Speakers heard in file f: their indices and vectors."""
        who = np.flatnonzero(self.likes[f])
        return who, self.speakers[who]


def make_files(setting: Setting, files: int, speakers: np.ndarray, seed: int) -> Files:
    """``files`` seeded files of ``setting`` whose speakers are drawn from ``speakers`` (P, D)."""
    rng = np.random.default_rng(seed)
    s = setting
    labels, _, likes = draw_turns(rng, files, len(speakers), s.frames, s.min_speakers, s.max_speakers, s.step)
    drop_brief_speakers(labels, likes, int(math.ceil(s.min_share * s.frames)))
    z = rng.standard_normal((files, s.frames, s.dim)).astype(np.float32)
    return Files(speakers[labels], z, labels, likes, speakers)


def drop_brief_speakers(labels: np.ndarray, likes: np.ndarray, min_frames: int) -> None:
    """In place: a speaker heard in fewer than min_frames frames of a file is not heard there;
    its frames continue the previous speaker's turn (the next one's at the start of the file),
    as the conversation mixer removes a speaker heard for under a second."""
    for f in range(len(labels)):
        who, counts = np.unique(labels[f], return_counts=True)
        brief = who[counts < min_frames]
        if len(brief) == len(who):
            brief = brief[brief != who[np.argmax(counts)]]
        if not len(brief):
            continue
        row = labels[f]
        keep = ~np.isin(row, brief)
        idx = np.where(keep, np.arange(len(row)), -1)
        previous = np.maximum.accumulate(idx)  # last kept frame at or before t
        first = int(np.argmax(keep))
        row[:] = np.where(previous >= 0, row[np.maximum(previous, 0)], row[first])
        likes[f, brief] = False


def pools(setting: Setting, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Training and test speaker pools (disjoint: drawn independently)."""
    rng = np.random.default_rng(seed)
    return speaker_pool(rng, setting.pool, setting.dim), speaker_pool(rng, setting.pool, setting.dim)


def separated(estimates: np.ndarray, truth: np.ndarray) -> bool:
    """Every true speaker (S, D) matched one-to-one by an estimate (M, D) with cosine >= 0.9."""
    if len(estimates) < len(truth):
        return False
    e = estimates / np.maximum(np.linalg.norm(estimates, axis=1, keepdims=True), 1e-12)
    t = truth / np.linalg.norm(truth, axis=1, keepdims=True)
    cos = t @ e.T  # (S, M)
    rows, cols = linear_sum_assignment(-cos)
    return bool((cos[rows, cols] >= SEPARATED_COSINE).all())


def group_means(frames: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean frame of each label >= 0: (groups, D)."""
    return np.stack([frames[labels == g].mean(0) for g in np.unique(labels[labels >= 0])]) if (labels >= 0).any() \
        else np.zeros((0, frames.shape[1]), frames.dtype)


# Time-blind and oracle estimators: (frames (T, D), labels (T,), k) -> estimates (M, D)

def ceiling(frames, labels, k):
    """The per-speaker frame means under the true labels: the bound on every estimator."""
    return group_means(frames, labels)


def kmeans(frames, labels, k):
    """k-means with the true k over the frames (time-blind)."""
    from sklearn.cluster import KMeans

    return KMeans(k, n_init=4, random_state=0).fit(frames).cluster_centers_


def hdbscan_pca(frames, labels, k, dims: int = 5, min_cluster_size: int = 15):
    """HDBSCAN after PCA to ``dims`` dimensions (time-blind); estimates are the groups' frame means."""
    import hdbscan
    from sklearn.decomposition import PCA

    reduced = PCA(dims, random_state=0).fit_transform(frames)
    found = hdbscan.HDBSCAN(min_cluster_size=min_cluster_size).fit_predict(reduced)
    return group_means(frames, found)


def smoothed_kmeans(window: int):
    """k-means on frames averaged over ``window`` frames (time-aware, nothing learnt); the
    estimates are the raw frames' means over the clusters found."""
    from sklearn.cluster import KMeans

    def estimate(frames, labels, k):
        kernel = np.ones(window) / window
        smooth = np.stack([np.convolve(frames[:, d], kernel, mode="same") for d in range(frames.shape[1])], 1)
        found = KMeans(k, n_init=4, random_state=0).fit_predict(smooth)
        return group_means(frames, found)

    return estimate


def separated_share(files: Files, sigma: float, estimator, limit: int | None = None) -> float:
    """Share of the (first ``limit``) files at noise ``sigma`` that ``estimator`` separates."""
    frames = files.frames(sigma)
    n = len(frames) if limit is None else min(limit, len(frames))
    hits = 0
    for f in range(n):
        who, truth = files.truth(f)
        hits += separated(estimator(frames[f], files.labels[f], len(who)), truth)
    return hits / n


def sigma90(share_at, grid: np.ndarray) -> tuple[float, list[tuple[float, float]]]:
    """Largest noise with >= 90% separated, on an ascending grid (linear interpolation at the
    crossing); the sweep stops once the share falls under 0.5. Returns (sigma90, curve)."""
    curve = []
    for sigma in grid:
        curve.append((float(sigma), share_at(float(sigma))))
        if curve[-1][1] < 0.5:
            break
    best = 0.0  # also when the first noise level already fails: "below the grid"
    for (s0, a0), (s1, a1) in zip(curve[:1] + curve[:-1], curve):
        if a1 >= 0.9:
            best = s1
            continue
        if a0 >= 0.9:
            best = s0 + (s1 - s0) * (a0 - 0.9) / max(a0 - a1, 1e-9)
        break
    return best, curve


# The learned weighter on vectors

def vector_config(setting: Setting, **changes) -> WeighterConfig:
    """The Weighter block sized for D-dim frames: channels kept (D is small), time / 15."""
    c = WeighterConfig(frame_dim=setting.dim, channel_shrink=1, d_model=64, layers=2, heads=4, ff_dim=128,
                       pos_conv_kernel=5, pos_conv_groups=4, num_buckets=32, max_distance=100, dropout=0.0,
                       slots=4)
    return replace(c, **changes)


class VectorWeighter(nn.Module):
    """Frames (B, T, D) -> weightings, confidences and slot estimates = W-weighted frame means.
    The classifier over training speakers is a scaled cosine with a bias (training only)."""

    def __init__(self, config: WeighterConfig, num_likes: int):
        super().__init__()
        self.config = config
        self.weighter = Weighter(config)
        self.like_vectors = nn.Parameter(torch.randn(num_likes, config.frame_dim) * 0.1)
        self.like_bias = nn.Parameter(torch.tensor(-4.0))
        self.scale = 10.0

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """frames (B, T, D) -> x, weights, confidence and estimates (B, N, D): W-weighted frame means."""
        b, t, _ = frames.shape
        mask = torch.ones(b, t, dtype=torch.bool)
        x, y = self.weighter(frames, torch.full((b,), t))
        x, w, c = weigh(x, y, mask, self.config.confidence)
        estimates = torch.einsum("bnt,btd->bnd", w, frames)  # (B, N, D)
        return {"x": x, "weights": w, "confidence": c, "estimates": estimates}

    def like_probability(self, estimates: torch.Tensor) -> torch.Tensor:
        """Each slot's probability of each training like, from the estimates' cosines (B, N, K)."""
        cos = F.normalize(estimates, dim=-1) @ F.normalize(self.like_vectors, dim=-1).T  # (B, N, K)
        return torch.sigmoid(self.scale * cos + self.like_bias)


@dataclass(frozen=True)
class Recipe:
    """How the vector weighter is trained (each setting described beside it)."""

    steps: int = 1500
    batch: int = 64
    lr: float = 3e-3
    sigma_max: float = 1.0  # training noise ~ U(0.05, sigma_max) per file
    loss: str = "wbce"  # wbce | bce, on the file-level likes (slots combined by sum)
    frame_truth: float = 0.0  # weight of the permutation-matched slot-activity loss (0: likes alone)
    seed: int = 0


def train_vector_weighter(setting: Setting, config: WeighterConfig, recipe: Recipe, speakers: np.ndarray,
                          progress=None) -> tuple[VectorWeighter, dict]:
    """Trains on fresh files each step (training pool only). Returns the model and
    {"seconds", "steps", "final_loss"}."""
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed + 1)
    model = VectorWeighter(config, len(speakers))
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(i, recipe.steps) / recipe.steps)))
    start, losses = time.perf_counter(), []
    for step in range(recipe.steps):
        files = make_files(setting, recipe.batch, speakers, seed=int(rng.integers(2**31)))
        sigma = rng.uniform(0.05, recipe.sigma_max, size=(recipe.batch, 1, 1)).astype(np.float32)
        frames = torch.from_numpy(files.clean + sigma * files.z)
        y = torch.from_numpy(files.likes.astype(np.float32))
        out = model(frames)
        p = file_prediction(model.like_probability(out["estimates"]), out["confidence"], "sum")  # (B, K)
        loss = (wbce(y, p) if recipe.loss == "wbce" else bce(y, p.clamp(max=1.0))).sum(1).mean()
        if recipe.frame_truth:
            loss = loss + recipe.frame_truth * activity_loss(out["x"], files)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step, float(np.mean(losses[-50:])))
    model.eval()
    return model, {"seconds": time.perf_counter() - start, "steps": recipe.steps,
                   "final_loss": float(np.mean(losses[-100:]))}


def activity_loss(x: torch.Tensor, files: Files) -> torch.Tensor:
    """Slots matched one-to-one to the file's speakers (Hungarian on BCE); matched slots learn
    their speaker's activity, the others silence."""
    target = torch.zeros_like(x)
    for b in range(len(x)):
        who = np.flatnonzero(files.likes[b])
        act = torch.from_numpy((files.labels[b][None] == who[:, None]).astype(np.float32))  # (S, T)
        rows, cols = match_slots(x[b], act)
        target[b, torch.from_numpy(rows)] = act[cols]
    return F.binary_cross_entropy(x.clamp(1e-5, 1 - 1e-5), target)


@torch.no_grad()
def learned_outputs(model: VectorWeighter, frames: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Slot estimates (F, N, D) and confidences (F, N)."""
    est, conf = [], []
    for i in range(0, len(frames), batch):
        out = model(torch.from_numpy(np.ascontiguousarray(frames[i:i + batch])))
        est.append(out["estimates"].numpy())
        conf.append(out["confidence"].numpy())
    return np.concatenate(est), np.concatenate(conf)


def learned_share(model: VectorWeighter, files: Files, sigma: float) -> float:
    """Separated share with the top-k slots by confidence (k true, as k-means is given)."""
    est, conf = learned_outputs(model, files.frames(sigma))
    hits = 0
    for f in range(len(est)):
        who, truth = files.truth(f)
        top = np.argsort(-conf[f])[: len(who)]
        hits += separated(est[f, top], truth)
    return hits / len(est)


def count_accuracy(model: VectorWeighter, calibration: Files, test: Files, sigma: float) -> tuple[float, float]:
    """Speakers counted as slots with confidence >= a threshold chosen on the calibration files
    (training speakers); returns (threshold, accuracy on the test files)."""
    def counts(files):
        _, conf = learned_outputs(model, files.frames(sigma))
        return conf, files.likes.sum(1)

    conf, true = counts(calibration)
    grid = np.unique(np.round(conf.ravel(), 3))
    grid = grid[np.linspace(0, len(grid) - 1, min(len(grid), 400)).astype(int)]
    accuracy = [((conf >= g).sum(1) == true).mean() for g in grid]
    threshold = float(grid[int(np.argmax(accuracy))])
    conf, true = counts(test)
    return threshold, float(((conf >= threshold).sum(1) == true).mean())
