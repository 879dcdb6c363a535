"""What the store's writers and ``Store.info`` return: small typed results.

Each has ``to_dict()``, the JSON shape that ``weighter index ... --json`` prints.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class StoreInfo:
    """What a store holds (``Store.info()``).

    Attributes
    ----------
    store : str
        The store directory.
    model_id : str or None
        The model whose embeddings it holds (None: empty).
    files, slots, active_slots : int
        Stored files; their slots; the active ones, which FAISS indexes.
    audio_seconds : float
        Stored audio, in seconds.
    index_type : str or None
        The FAISS factory string of the index.
    nprobe : int or None
        Inverted lists probed per search (IVF indexes only).
    speech_gate : float or None
        The store's speech gate (``Embedder(speech_gate=...)``).
    generation : int
        The number of the FAISS and scores files in use (0: none yet).
    faiss_file : str or None
        The base FAISS file's name in the store directory.
    scoring : str
        ``"s-norm"`` or ``"cosine"``.
    score_share : float or None
        The score cohort's top share (``weighter.scoring``).
    pair_prior : float or None
        The base rate ``p`` speaks for (the share of file pairs that share a like): fitted to
        the store's own file pairs when it has enough, else the one the model's calibration
        states; None for a model without calibration.
    pair_prior_fitted : bool
        Whether ``pair_prior`` was fitted to the store (``weighter.index.pair_model``).
    deltas : int
        Writes kept as deltas beside the base index since it was written (``Store.optimize``
        folds them in).
    lists_file : str or None
        The base's inverted lists file (memory-mapped, FAISS's on-disk lists) where the base
        keeps them on disk; None where they are inside ``faiss_file``.

    Examples
    --------
    >>> Store("calls.store").info().active_slots  # doctest: +SKIP
    5
    """

    store: str
    model_id: str | None
    files: int
    audio_seconds: float
    slots: int
    active_slots: int
    index_type: str | None
    nprobe: int | None
    speech_gate: float | None
    generation: int
    faiss_file: str | None
    scoring: str
    score_share: float | None
    pair_prior: float | None = None
    pair_prior_fitted: bool = False
    deltas: int = 0
    lists_file: str | None = None

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class ApplyResult:
    """One atomic write (``Store.apply``).

    Attributes
    ----------
    added, removed : int
        Embedding sets added (or replaced); paths asked to be removed.
    active_vectors : int
        Vectors in the new FAISS index.
    index_type : str
        Its FAISS factory string.

    Examples
    --------
    >>> with store.writing():  # doctest: +SKIP
    ...     store.apply([], remove=["calls/a.flac"]).active_vectors
    4
    """

    added: int
    removed: int
    active_vectors: int
    index_type: str

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class AddResult:
    """What ``add_files`` did.

    Attributes
    ----------
    added, unchanged, failed : int
        Files embedded and stored; skipped as already stored with the same content; unusable.
    store : StoreInfo
        The store afterwards.

    Examples
    --------
    >>> result = add_files(store, Embedder.load(), ["calls/a.flac"])  # doctest: +SKIP
    >>> result.added, result.store.active_slots  # doctest: +SKIP
    (1, 2)
    """

    added: int
    unchanged: int
    failed: int
    store: StoreInfo

    def to_dict(self) -> dict:
        """The counts, then the store's info, in one flat JSON-ready dict."""
        return {"added": self.added, "unchanged": self.unchanged, "failed": self.failed, **self.store.to_dict()}


@dataclass(frozen=True)
class RemoveResult:
    """What ``remove_files`` did.

    Attributes
    ----------
    removed : int
        Files removed.
    not_in_store : list of str
        Paths asked for that the store did not hold.
    store : StoreInfo
        The store afterwards.

    Examples
    --------
    >>> remove_files(store, ["calls/a.flac"]).removed  # doctest: +SKIP
    1
    """

    removed: int
    not_in_store: list[str]
    store: StoreInfo

    def to_dict(self) -> dict:
        """The counts, then the store's info, in one flat JSON-ready dict."""
        return {"removed": self.removed, "not_in_store": self.not_in_store, **self.store.to_dict()}
