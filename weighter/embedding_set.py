"""The one data type that flows between embedder, index and cluster: a file's embedding set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


def spans(weighting: np.ndarray, rate: float, duration: float, threshold: float = 0.5,
          min_seconds: float = 0.5) -> list[tuple[float, float]]:
    """(start, end) seconds of the runs where one slot's weighting (T,) at ``rate`` Hz is >= threshold,
    runs shorter than ``min_seconds`` left out."""
    edges = np.diff(np.concatenate([[0], (np.asarray(weighting) >= threshold).astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    keep = (ends - starts) / rate >= min_seconds
    return [(round(a / rate, 2), round(min(b / rate, duration), 2)) for a, b in zip(starts[keep], ends[keep])]


@dataclass
class EmbeddingSet:
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
        """Where slot ``slot`` is heard: (start, end) seconds where its weighting >= threshold."""
        return spans(self.weightings[slot], self.timeline_rate, self.duration, threshold, min_seconds)

    def to_json(self, spans: bool = True) -> dict:
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
        extra = {} if self.speech_share is None else {
            "speech_share": self.speech_share, "speech_gate": np.nan if self.speech_gate is None else self.speech_gate}
        np.savez_compressed(path, embeddings=self.embeddings, confidence=self.confidence, active=self.active,
                            weightings=self.weightings, timeline_rate=self.timeline_rate, duration=self.duration,
                            model_id=self.model_id, path=self.path, **extra)

    @classmethod
    def load(cls, path: str | Path) -> "EmbeddingSet":
        with np.load(path, allow_pickle=False) as z:
            return cls(str(z["path"]), z["embeddings"], z["confidence"], z["active"], z["weightings"],
                       float(z["timeline_rate"]), float(z["duration"]), str(z["model_id"]),
                       *((z["speech_share"], None if np.isnan(z["speech_gate"]) else float(z["speech_gate"]))
                         if "speech_share" in z.files else ()))
