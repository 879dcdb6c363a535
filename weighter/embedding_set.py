"""The one data type that flows between embedder, index and cluster: a file's embedding set."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from weighter.scoring import _ranking  # the compiled loops, or None: numpy runs them


def spans(weighting: np.ndarray, rate: float, duration: float, threshold: float = 0.5,
          min_seconds: float = 0.5, compiled: bool = True) -> list[tuple[float, float]]:
    """Where one slot is heard: the runs of its weighting at or above ``threshold``.

    Parameters
    ----------
    weighting : ndarray of shape (T,)
        One slot's weighting over time, in [0, 1] (float32, or float16 as a store keeps it;
        compared with the threshold as float32).
    rate : float
        Hz of the weighting.
    duration : float
        Seconds of the file (the last span ends there at most).
    threshold : float, default 0.5
    min_seconds : float, default 0.5
        Shorter runs are left out.
    compiled : bool, default True
        Use weighter/_ranking.c where it was built; False: numpy (the reference).

    Returns
    -------
    list of (float, float)
        (start, end) in seconds, rounded to 10 ms.

    Examples
    --------
    >>> import numpy as np
    >>> spans(np.array([0, 0.9, 0.9, 0.9, 0.9, 0.9, 0, 0]), rate=2.0, duration=4.0) == [(0.5, 3.0)]
    True
    """
    if compiled and _ranking is not None and isinstance(weighting, np.ndarray) and weighting.ndim == 1 \
            and weighting.dtype in (np.float32, np.float16) and weighting.flags.c_contiguous:
        return _ranking.spans(weighting, float(rate), float(duration), float(threshold), float(min_seconds))
    above = np.zeros(len(weighting) + 2, bool)  # (T + 2,): False before and after the timeline
    weighting = np.asarray(weighting)
    above[1:-1] = (weighting.astype(np.float32) if weighting.dtype == np.float16 else weighting) >= threshold
    edges = np.flatnonzero(above[1:] != above[:-1]).tolist()  # starts and ends of runs, alternating
    return [(round(a / rate, 2), round(min(b / rate, duration), 2))
            for a, b in zip(edges[::2], edges[1::2]) if (b - a) / rate >= min_seconds]


@dataclass
class EmbeddingSet:
    """One file's embedding set: N slots, each an embedding, a confidence and a weighting over time.

    The embedder makes one per file (``Embedder.embed``); a store keeps them
    (``Store.embedding_set``), queries and clustering read them. Active slots are the likes
    (speakers) the model heard in the file.

    Attributes
    ----------
    path : str
        The file.
    embeddings : ndarray of shape (N, E), float32
        One L2-normalised embedding per slot (E = 256 for the shipped model).
    confidence : ndarray of shape (N,), float32
        In [0, 1].
    active : ndarray of shape (N,), bool
        Confidence at or above the model's calibrated threshold (and, with a speech gate,
        enough of the slot's weighting on speech).
    weightings : ndarray of shape (N, T), float32
        Each slot's weighting over time, in [0, 1], at ``timeline_rate``.
    timeline_rate : float
        Hz of the weightings (10 from the embedder).
    duration : float
        Seconds.
    model_id : str
        The model that made the set.
    speech_share : ndarray of shape (N,) or None
        Share of each slot's weighting on speech (with a speech gate only).
    speech_gate : float or None
        The gate it was embedded with.

    Examples
    --------
    >>> from weighter import Embedder
    >>> s = Embedder.load().embed(["call.flac"])[0]  # doctest: +SKIP
    >>> s.embeddings[s.active].shape, s.spans(int(s.active.argmax()))  # doctest: +SKIP
    ((2, 256), [(0.0, 4.3), (9.1, 12.0)])
    """

    path: str
    embeddings: np.ndarray  # (N, E) float32, L2-normalised: one per slot
    confidence: np.ndarray  # (N,) float32 in [0, 1]
    active: np.ndarray  # (N,) bool: confidence >= the model's calibrated threshold
    weightings: np.ndarray  # (N, T) float32 in [0, 1]: the slot's X over time, at timeline_rate (with a
    #                         speech gate, 0 where no speech is heard within 1 s: embedder/speech.py)
    timeline_rate: float  # Hz of the weightings timeline
    duration: float  # seconds
    model_id: str
    speech_share: np.ndarray | None = None  # (N,) share of each slot's weighting on speech (embedded with a speech gate)
    speech_gate: float | None = None  # the gate: a slot is active only with speech_share >= it

    def spans(self, slot: int, threshold: float = 0.5, min_seconds: float = 0.5) -> list[tuple[float, float]]:
        """Where slot ``slot`` is heard: (start, end) seconds where its weighting >= threshold.

        Parameters
        ----------
        slot : int
            Slot number, 0 to N - 1.
        threshold : float, default 0.5
        min_seconds : float, default 0.5
            Shorter runs are left out.

        Returns
        -------
        list of (float, float)
            (start, end) in seconds.
        """
        return spans(self.weightings[slot], self.timeline_rate, self.duration, threshold, min_seconds)

    def to_json(self, spans: bool = True) -> dict:
        """The set as JSON-ready Python values (what ``weighter embed --json`` prints).

        Parameters
        ----------
        spans : bool, default True
            Include each slot's spans.

        Returns
        -------
        dict
            ``path``, ``duration``, ``model_id``, ``timeline_rate``, ``slots`` (per slot:
            ``slot``, ``confidence``, ``active``, ``embedding``, and ``spans``, ``speech_share``
            where known) and ``weightings`` (N lists of T values).
        """
        slots = []
        for n in range(len(self.confidence)):
            entry = {"slot": n, "confidence": round(float(self.confidence[n]), 4), "active": bool(self.active[n]),
                     "embedding": [round(float(v), 6) for v in self.embeddings[n]]}
            if self.speech_share is not None:
                entry["speech_share"] = round(float(self.speech_share[n]), 4)
            if spans:
                entry["spans"] = self.spans(n)
            slots.append(entry)
        return {"path": self.path, "duration": round(self.duration, 3), "model_id": self.model_id,
                "timeline_rate": self.timeline_rate, "slots": slots,
                "weightings": [[round(float(v), 3) for v in row] for row in self.weightings]}

    def save(self, path: str | Path) -> None:
        """Write the set to a compressed ``.npz`` file that ``load`` reads back.

        Parameters
        ----------
        path : str or Path
            The file to write.

        Examples
        --------
        >>> s.save("call.npz"); EmbeddingSet.load("call.npz").model_id == s.model_id  # doctest: +SKIP
        True
        """
        extra = {} if self.speech_share is None else {
            "speech_share": self.speech_share, "speech_gate": np.nan if self.speech_gate is None else self.speech_gate}
        np.savez_compressed(path, embeddings=self.embeddings, confidence=self.confidence, active=self.active,
                            weightings=self.weightings, timeline_rate=self.timeline_rate, duration=self.duration,
                            model_id=self.model_id, path=self.path, **extra)

    @classmethod
    def load(cls, path: str | Path) -> "EmbeddingSet":
        """Read a set that ``save`` wrote (no pickled objects are loaded).

        Parameters
        ----------
        path : str or Path
            A ``.npz`` file.

        Returns
        -------
        EmbeddingSet
        """
        with np.load(path, allow_pickle=False) as z:
            return cls(str(z["path"]), z["embeddings"], z["confidence"], z["active"], z["weightings"],
                       float(z["timeline_rate"]), float(z["duration"]), str(z["model_id"]),
                       *((z["speech_share"], None if np.isnan(z["speech_gate"]) else float(z["speech_gate"]))
                         if "speech_share" in z.files else ()))


def set_file_name(path: str | Path) -> str:
    """The ``.npz`` name a file's embedding set is written under (``weighter embed --out``).

    The file's stem and 8 hex digits of its resolved path, so that files of the same name in
    different folders do not collide.

    Examples
    --------
    >>> set_file_name("/calls/a.flac")[:2], len(set_file_name("/calls/a.flac"))
    ('a-', 10)
    """
    p = Path(path)
    return f"{p.stem}-{hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:8]}"
