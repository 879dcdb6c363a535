"""Filling a store: hash each file, embed the new and changed ones, commit in atomic steps."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from weighter.audio import AudioSource
from weighter.errors import AudioError
from weighter.index.pair_model import fit_store
from weighter.index.results import AddResult, RemoveResult
from weighter.index.store import Store, content_hash

if TYPE_CHECKING:  # torch is not imported by the store's readers
    from weighter.embedder import Embedder
    from weighter.embedding_set import EmbeddingSet

log = logging.getLogger(__name__)


def add_files(store: Store, embedder: "Embedder", inputs: Iterable[str | Path | AudioSource], progress: bool = False,
              errors: list | None = None, index_type: str | None = None, commit_every: int = 500,
              embed: Callable[[list[Path], list], Iterable["EmbeddingSet"]] | None = None) -> AddResult:
    """Embed and store every file not already stored with the same content hash.

    A file whose content changed is embedded again and replaces its old slots. Commits every
    ``commit_every`` files: each commit is atomic, so a kill loses at most the files embedded
    since the last one, never what was already stored.

    Parameters
    ----------
    store : Store
        The store to fill (``Store(directory, create=True)`` for a new one).
    embedder : Embedder
        The store's model (a store holds one model's embeddings and one speech gate).
    inputs : iterable of str, Path or AudioSource
        Audio files (``weighter.audio.discover`` expands directories, file lists and manifests).
    progress : bool, default False
        Show a progress bar.
    errors : list or None
        Where unusable files go (as ``AudioError``) while the rest go on; None: the first one
        raises.
    index_type : str or None
        A FAISS factory string (e.g. ``"HNSW32,Flat"``); None: exact search up to 100k active
        slots, an IVF index beyond.
    commit_every : int, default 500
        Files per atomic commit.
    embed : callable or None
        Where the sets come from: called once with the paths to embed and ``errors``, it yields
        one set per usable file, in any order (``RayEmbedder(...).stream`` embeds them on a
        Ray cluster); None: ``embedder.embed``, ``commit_every`` files at a time.

    Returns
    -------
    AddResult
        ``added``, ``unchanged`` and ``failed`` file counts, and the store's ``StoreInfo``.

    Raises
    ------
    StoreError
        The store holds another model's embeddings or another speech gate, or another process
        is writing it.
    AudioError
        An unusable file, when ``errors`` is None.

    Examples
    --------
    >>> from weighter import Embedder, Store, add_files
    >>> with Store("calls.store", create=True) as store:  # doctest: +SKIP
    ...     result = add_files(store, Embedder.load(), ["calls/a.flac", "calls/b.flac"])
    >>> result.added, result.store.active_slots  # doctest: +SKIP
    (2, 5)
    """
    errors = [] if errors is None else errors
    with store.writing():
        store.check_model(embedder.model_id)
        store.check_speech_gate(embedder.speech_gate)
        todo, unchanged = [], 0
        for source in inputs:
            path = Path(source.path if isinstance(source, AudioSource) else source)
            try:
                digest = content_hash(path)
            except OSError as error:
                errors.append(AudioError(path, f"unreadable ({error.strerror or error})"))
                continue
            if store.known_hash(path) == digest:
                unchanged += 1
            else:
                todo.append((path, digest))
        # P(like shared) for cosines and normalised scores; the cosine at which two slots are one like
        for key in ("pair_calibration", "pair_calibration_snorm", "merge_cosine"):
            if store.meta(key) is None and getattr(embedder.metadata, key):
                store.set_meta(key, json.dumps(getattr(embedder.metadata, key)))
        if store.meta("pair_prior_stated") is None and embedder.metadata.pair_prior:  # the base rate p speaks for
            store.set_meta("pair_prior_stated", json.dumps(embedder.metadata.pair_prior))
        digests = {str(p): d for p, d in todo}
        if embed is None:
            def embed(paths: list[Path], errs: list):  # this process, commit_every files at a time
                for start in range(0, len(paths), commit_every):
                    yield from embedder.embed(paths[start:start + commit_every], progress=progress, errors=errs)
        added, batch, failed = 0, [], len(errors)
        stream = iter(embed([p for p, _ in todo], errors)) if todo else iter(())
        while True:  # a commit every commit_every files done (stored or failed), and at the end
            s = next(stream, None)
            if s is not None and s.path in digests:
                batch.append((s, digests.pop(s.path)))  # popped: a set that came twice is stored once
            if (s is None or len(batch) + len(errors) - failed >= commit_every) and (batch or index_type):
                store.apply(batch, index_type=index_type, score_cohort=embedder.score_cohort)
                added, batch, index_type, failed = added + len(batch), [], None, len(errors)
            if s is None:
                break
        if added:  # the base rate p speaks for, refitted to the store's own file pairs (pair_model.py)
            fit_store(store)
        return AddResult(added=added, unchanged=unchanged, failed=len(errors), store=store.info())


def remove_files(store: Store, paths: list[str | Path]) -> RemoveResult:
    """Remove files from a store, by path, in one atomic step.

    Parameters
    ----------
    store : Store
    paths : list of str or Path
        Paths as they were added (they are resolved).

    Returns
    -------
    RemoveResult
        ``removed`` (count), ``not_in_store`` (the paths that were not stored), and the store's
        ``StoreInfo``.

    Examples
    --------
    >>> remove_files(store, ["calls/a.flac"]).removed  # doctest: +SKIP
    1
    """
    with store.writing():
        known = [p for p in paths if store.file_id(p) is not None]
        missing = [str(p) for p in paths if store.file_id(p) is None]
        if known:
            store.apply([], remove=known)
            fit_store(store)  # the base rate of the pairs that are left
        return RemoveResult(removed=len(known), not_in_store=missing, store=store.info())
