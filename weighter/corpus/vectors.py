"""The research's vector-level simulation: frames drawn from a few speaker vectors plus noise.

Each file has ``k`` speakers out of a pool; at frame t the active one is picked by the bounded
random walk ``r_{t+1} = clip(r_t + N(0, step), 0, 1)`` (bins of [0, 1], one per speaker) and the
frame is ``speaker_vector + N(0, noise^2 I)``. Fast to make, so experiments on the weighting
itself (and tests) need no audio at all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from weighter.errors import CorpusError


@dataclass(frozen=True)
class VectorSimConfig:
    files: int = 1000
    pool: int = 200  # speakers to draw from
    dim: int = 32  # D
    frames: int = 300  # T per file
    min_speakers: int = 2
    max_speakers: int = 3
    noise: float = 0.3  # std of the per-frame Gaussian noise, per dimension
    step: float = 0.1  # std of one random-walk step (0.1: the research's recipe)
    seed: int = 0

    def __post_init__(self):
        if not 1 <= self.min_speakers <= self.max_speakers <= self.pool:
            raise CorpusError("vector simulation: need 1 <= min speakers <= max speakers <= pool")


def simulate_vectors(config: VectorSimConfig) -> dict[str, np.ndarray]:
    """Arrays: speakers (P, D) unit vectors; frames (F, T, D); labels (F, T) speaker index;
    likes (F, P) bool; walk (F, T) the walk's position."""
    c = config
    rng = np.random.default_rng(c.seed)
    speakers = rng.normal(size=(c.pool, c.dim))
    speakers /= np.linalg.norm(speakers, axis=1, keepdims=True)
    labels = np.empty((c.files, c.frames), np.int32)
    walk = np.empty((c.files, c.frames), np.float32)
    likes = np.zeros((c.files, c.pool), bool)
    for f in range(c.files):
        k = int(rng.integers(c.min_speakers, c.max_speakers + 1))
        chosen = rng.choice(c.pool, size=k, replace=False)
        r = np.empty(c.frames)
        r[0] = rng.uniform()
        steps = rng.normal(0, c.step, size=c.frames)
        for t in range(1, c.frames):
            r[t] = min(1.0, max(0.0, r[t - 1] + steps[t]))
        labels[f] = chosen[np.minimum((r * k).astype(int), k - 1)]
        walk[f] = r
        likes[f, np.unique(labels[f])] = True  # a drawn speaker the walk never reached is not heard
    frames = speakers[labels] + rng.normal(0, c.noise, size=(c.files, c.frames, c.dim))
    return {"speakers": speakers.astype(np.float32), "frames": frames.astype(np.float32),
            "labels": labels, "likes": likes, "walk": walk}


def switch_rate(labels: np.ndarray) -> float:
    """Speaker changes per frame (the research's recipe gives about 0.3 at step 0.1, k = 3)."""
    return float((labels[:, 1:] != labels[:, :-1]).mean())


def config_dict(config: VectorSimConfig) -> dict:
    return asdict(config)
