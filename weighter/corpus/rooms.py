"""Room impulse responses by the image-source method (Allen and Berkley, 1979), numpy only.

A shoebox room of random size (3-10 x 3-8 x 2.5-4 m) whose walls all reflect alike: a
reverberation time drawn from a range gives the walls' absorption by Sabine's formula,
RT60 = 0.161 V / (S alpha). (A bare box is not Sabine's diffuse room: echoes running along
its longest side meet few walls. Measured on the responses, Sabine's 0.15 / 0.3 / 0.45 s
decay by 60 dB in 0.07-0.18 / 0.33-0.44 / 0.56-0.72 s.) Every image of the source up to ``length``
seconds of travel adds a pulse of amplitude beta^reflections / distance at its delay
(nearest sample). A room holds one microphone and one position per speaker, so speakers in
one file share the room and differ in distance and echoes, as in a meeting. Responses are
scaled so the direct sound has amplitude 1: the speech level stays what the mixer set, and
the echoes come on top.
"""

from __future__ import annotations

import numpy as np

SPEED_OF_SOUND = 343.0  # m/s
WALL_GAP = 0.5  # m: sources and microphone stay this far from every wall


def room_responses(rng: np.random.Generator, speakers: int, rt60: tuple[float, float] = (0.15, 0.45),
                   sample_rate: int = 16000, length: float = 0.4) -> np.ndarray:
    """Impulse responses (speakers, samples) from each speaker's position to the microphone of
    one random room."""
    size = rng.uniform((3.0, 3.0, 2.5), (10.0, 8.0, 4.0))
    seconds = float(rng.uniform(*rt60))
    volume, surface = float(np.prod(size)), 2 * float(size[0] * size[1] + size[0] * size[2] + size[1] * size[2])
    absorption = min(0.161 * volume / (surface * seconds), 0.99)
    beta = float(np.sqrt(1 - absorption))
    mic = rng.uniform(WALL_GAP, size - WALL_GAP)
    return np.stack([_response(rng.uniform(WALL_GAP, size - WALL_GAP), mic, size, beta, sample_rate, length)
                     for _ in range(speakers)])


def _response(source: np.ndarray, mic: np.ndarray, size: np.ndarray, beta: float, sample_rate: int,
              length: float) -> np.ndarray:
    reach = SPEED_OF_SOUND * length  # the farthest image that still arrives in time
    axes = []
    for d in range(3):  # per axis: image offsets and reflection counts, for n in -K..K and both parities
        k = int(np.ceil(reach / (2 * size[d]))) + 1
        n = np.arange(-k, k + 1)
        offset = np.concatenate([2 * n * size[d] + source[d] - mic[d], 2 * n * size[d] - source[d] - mic[d]])
        bounces = np.concatenate([np.abs(2 * n), np.abs(2 * n - 1)])  # walls crossed on the way
        keep = np.abs(offset) <= reach
        axes.append((offset[keep], bounces[keep]))
    (ox, bx), (oy, by), (oz, bz) = axes
    dist = np.sqrt(ox[:, None, None] ** 2 + oy[None, :, None] ** 2 + oz[None, None, :] ** 2).ravel()
    bounces = (bx[:, None, None] + by[None, :, None] + bz[None, None, :]).ravel()
    keep = dist <= reach
    dist, bounces = dist[keep], bounces[keep]
    direct = float(np.linalg.norm(source - mic))
    out = np.zeros(int(length * sample_rate) + 1)
    delay = np.rint((dist - direct) / SPEED_OF_SOUND * sample_rate).astype(int)  # the direct sound at sample 0
    inside = (delay >= 0) & (delay < len(out))
    np.add.at(out, delay[inside], (beta ** bounces[inside]) * direct / np.maximum(dist[inside], 1e-3))
    return out.astype(np.float32)
