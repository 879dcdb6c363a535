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
    """The research's vector simulation: files of noisy speaker vectors, turns by a random walk."""

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
    speakers = speaker_pool(rng, c.pool, c.dim)
    labels, walk, likes = draw_turns(rng, c.files, c.pool, c.frames, c.min_speakers, c.max_speakers, c.step)
    frames = speakers[labels] + rng.normal(0, c.noise, size=(c.files, c.frames, c.dim))
    return {"speakers": speakers, "frames": frames.astype(np.float32),
            "labels": labels, "likes": likes, "walk": walk}


def speaker_pool(rng: np.random.Generator, pool: int, dim: int) -> np.ndarray:
    """(P, D) random unit vectors, float32."""
    speakers = rng.normal(size=(pool, dim))
    return (speakers / np.linalg.norm(speakers, axis=1, keepdims=True)).astype(np.float32)


def draw_turns(rng: np.random.Generator, files: int, pool: int, frames: int, min_speakers: int,
               max_speakers: int, step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Who speaks at each frame: labels (F, T) speaker index, walk (F, T), likes (F, P) bool.
    Per file k speakers out of the pool; the active one follows the bounded random walk."""
    labels = np.empty((files, frames), np.int32)
    walk = np.empty((files, frames), np.float32)
    likes = np.zeros((files, pool), bool)
    for f in range(files):
        k = int(rng.integers(min_speakers, max_speakers + 1))
        chosen = rng.choice(pool, size=k, replace=False)
        r = np.empty(frames)
        r[0] = rng.uniform()
        steps = rng.normal(0, step, size=frames)
        for t in range(1, frames):
            r[t] = min(1.0, max(0.0, r[t - 1] + steps[t]))
        labels[f] = chosen[np.minimum((r * k).astype(int), k - 1)]
        walk[f] = r
        likes[f, np.unique(labels[f])] = True  # a drawn speaker the walk never reached is not heard
    return labels, walk, likes


def switch_rate(labels: np.ndarray) -> float:
    """Speaker changes per frame (the research's recipe gives about 0.3 at step 0.1, k = 3)."""
    return float((labels[:, 1:] != labels[:, :-1]).mean())


def config_dict(config: VectorSimConfig) -> dict:
    """The configuration as a plain dict (for JSON)."""
    return asdict(config)
