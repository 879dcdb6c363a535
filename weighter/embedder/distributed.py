"""Embedding on a Ray cluster: Ray Data ``map_batches`` over a pool of actors, one model each.

``RayEmbedder(...).stream(paths, errors)`` yields the same ``EmbeddingSet``s as
``Embedder.embed`` (in the order they finish), while the actors, on CPU or GPU nodes, read the
audio themselves: paths must be ones every node sees. Each actor loads the model once and runs
``Embedder.embed`` over a batch of files; a set comes back as the bytes of its ``.npz``
(``EmbeddingSet.save``: plain arrays, no pickled objects), an unusable file as its one-line
reason. A worker that dies mid-batch is restarted by Ray and its batch run again; its output
never reached the driver, so no file comes back twice.

Ray is an optional extra (``pip install 'weighter[ray]'``), imported only here and only when a
``RayEmbedder`` is made.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from weighter.audio import AudioSource
from weighter.embedding_set import EmbeddingSet, set_file_name
from weighter.errors import AudioError, WeighterError

log = logging.getLogger(__name__)
# A test hook: "NAME:MARKER" makes the actor that meets a file named NAME exit at once (as a
# killed worker would), once: the MARKER file it creates first stops it happening again.
EXIT_HOOK = "WEIGHTER_RAY_TEST_EXIT"


@dataclass
class RayOptions:
    """Where and how wide the embedding runs.

    Attributes
    ----------
    address : str or None
        None or ``"local"``: start a Ray on this machine (stopped again afterwards); ``"auto"``
        (the cluster this machine belongs to) or ``"ray://HOST:10001"``: join a cluster. A Ray
        already started in this process (``ray.init``) is used as it is.
    actors : int or None
        Actors (model copies) in the pool; None: as many as the cluster's CPUs (GPUs with
        ``gpus_per_actor``) allow.
    cpus_per_actor : float, default 1.0
        CPUs each actor reserves; its torch threads follow (at least 1).
    gpus_per_actor : float, default 0.0
        GPUs each actor reserves; above 0 the model runs on CUDA (0.5: two actors share one).
    batch_size : int, default 16
        Files per task at most: an actor embeds them together (batched by length), and a dead
        worker's batch is what Ray runs again. Fewer when that gives each actor under 4
        batches, so that no actor waits idle while another finishes a long batch.

    Examples
    --------
    >>> RayOptions(address="auto", gpus_per_actor=1.0).device
    'cuda'
    """

    address: str | None = None
    actors: int | None = None
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    batch_size: int = 16

    @property
    def device(self) -> str:
        """The torch device of the actors: ``"cuda"`` with GPUs, else ``"cpu"``."""
        return "cuda" if self.gpus_per_actor > 0 else "cpu"


def require_ray():
    """Import Ray, or say how to install it.

    Returns
    -------
    module
        ``ray`` (with ``ray.data`` imported).

    Raises
    ------
    WeighterError
        Ray is not installed.

    Examples
    --------
    >>> ray = require_ray()  # doctest: +SKIP
    """
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise WeighterError("Ray is not installed: pip install 'weighter[ray]'") from None
    return ray


class _EmbedActor:
    """One Ray Data actor: loads the model once, then embeds a batch of files per call.

    A batch is ``{"path": (B,) str}``; the answer has one row per file: ``path``, ``set`` (the
    ``.npz`` bytes, empty for an unusable file), ``error`` (its reason, empty when usable).
    """

    def __init__(self, model: str | None, device: str, threads: int, embed_kw: dict, out_dir: str | None):
        import torch

        from weighter.embedder import Embedder

        torch.set_num_threads(threads)
        self.embedder = Embedder.load(model, device=device, **embed_kw)
        self.out_dir = Path(out_dir) if out_dir else None

    def __call__(self, batch: dict) -> dict:
        paths = [str(p) for p in batch["path"]]
        _exit_hook(paths)
        errors: list = []
        sets = {s.path: s for s in self.embedder.embed(paths, errors=errors)}
        reasons = {e.path: e.reason for e in errors}
        blobs = []
        for p in paths:
            if p not in sets:
                blobs.append(b"")
                continue
            buffer = io.BytesIO()
            sets[p].save(buffer)
            if self.out_dir is not None:  # --out: the worker writes the file itself
                (self.out_dir / (set_file_name(p) + ".npz")).write_bytes(buffer.getvalue())
            blobs.append(buffer.getvalue())
        return {"path": np.array(paths, dtype=object), "set": np.array(blobs, dtype=object),
                "error": np.array([reasons.get(p, "" if p in sets else "not embedded") for p in paths], dtype=object)}


def _exit_hook(paths: list[str]) -> None:
    """The test hook of ``EXIT_HOOK``: end this worker process abruptly, once."""
    hook = os.environ.get(EXIT_HOOK)
    if not hook:
        return
    name, marker = hook.split(":", 1)
    if any(Path(p).name == name for p in paths) and not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)


def _reachable(address: str, seconds: float = 10.0) -> None:
    """Fail in seconds on a cluster address nobody answers at (Ray itself would retry for minutes)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=seconds).close()
    except (OSError, ValueError) as error:
        raise WeighterError(f"Ray at {address}: nothing answers ({error}); give HOST:PORT of the cluster's head "
                            "(6379, or ray://HOST:10001), 'auto' on a cluster node, or no address for a local Ray") from None


class RayEmbedder:
    """Embed many files on a Ray cluster; yields what ``Embedder.embed`` would, as it comes.

    Use as a context manager: a local Ray it started (with the first ``stream``) is stopped on
    exit.

    Parameters
    ----------
    model : str, Path or None
        A model file every node can read; None: the model shipped with the package.
    options : RayOptions or None
        Cluster address, actors, CPUs / GPUs per actor, files per batch; None: the defaults.
    **embed_kw
        ``window_seconds``, ``batch_seconds``, ``merge_cosine``, ``speech_gate``, ``precision``,
        as for ``Embedder`` (each actor resolves ``precision`` on its own node).

    Raises
    ------
    WeighterError
        Ray is not installed (``pip install 'weighter[ray]'``), or the cluster cannot be reached.

    Examples
    --------
    >>> from weighter.embedder.distributed import RayEmbedder, RayOptions
    >>> errors = []
    >>> with RayEmbedder(options=RayOptions(actors=2)) as ray_embedder:  # doctest: +SKIP
    ...     sets = list(ray_embedder.stream(["calls/a.flac", "calls/broken.wav"], errors))
    >>> len(sets), str(errors[0])  # doctest: +SKIP
    (1, 'calls/broken.wav: not readable as audio (Format not recognised.)')
    """

    def __init__(self, model: str | Path | None = None, options: RayOptions | None = None, **embed_kw):
        self.model = None if model is None else str(Path(model).resolve())
        self.options = options or RayOptions()
        self.embed_kw = embed_kw
        self._ray = require_ray()
        self._started = False

    def __enter__(self) -> "RayEmbedder":
        return self  # Ray starts with the first stream: nothing to embed, no start-up

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        """Connect to the cluster, or start a local Ray (once; ``stream`` calls it too)."""
        ray = self._ray
        if ray.is_initialized():
            return
        address = None if self.options.address in (None, "local") else self.options.address
        if address not in (None, "auto"):
            _reachable(address)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=log.isEnabledFor(logging.INFO),
                     logging_level=logging.INFO if log.isEnabledFor(logging.INFO) else logging.ERROR)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise WeighterError(f"Ray at {address or 'this machine'}: cannot start or join ({error})") from None
        self._started = True

    def close(self) -> None:
        """Stop the local Ray this embedder started (a cluster joined or a Ray started by the
        caller is left running)."""
        if self._started:
            self._ray.shutdown()
            self._started = False

    def actors(self) -> int:
        """The actors in the pool: ``options.actors``, or as many as the cluster's CPUs (GPUs)
        allow, at least 1."""
        if self.options.actors:
            return self.options.actors
        resources = self._ray.cluster_resources()
        if self.options.gpus_per_actor > 0:
            return max(1, int(resources.get("GPU", 0) // self.options.gpus_per_actor))
        return max(1, int(resources.get("CPU", 1) // self.options.cpus_per_actor))

    def stream(self, inputs: Iterable[str | Path | AudioSource], errors: list | None = None,
               out_dir: str | Path | None = None) -> Iterator[EmbeddingSet]:
        """Embed files on the cluster: one set per usable file, in the order they finish.

        Parameters
        ----------
        inputs : iterable of str, Path or AudioSource
            Audio files every node can read.
        errors : list or None
            Where unusable files go (as ``AudioError``, the same one-liners as
            ``Embedder.embed``) while the rest go on; None: the first one raises.
        out_dir : str, Path or None
            Also have the workers write each set there as ``set_file_name(path) + ".npz"``
            (a folder every node sees).

        Yields
        ------
        EmbeddingSet
            With ``path`` as given (``str(Path(input))``).

        Raises
        ------
        AudioError
            An unusable file, when ``errors`` is None.

        Examples
        --------
        >>> with RayEmbedder("model.pt") as r:  # doctest: +SKIP
        ...     for s in r.stream(["a.flac", "b.flac"]):
        ...         print(s.path, int(s.active.sum()))
        a.flac 2
        b.flac 1
        """
        paths = [str(Path(i.path if isinstance(i, AudioSource) else i)) for i in inputs]
        if not paths:
            return
        self.start()
        verbose = log.isEnabledFor(logging.INFO)  # Ray Data's progress and logs only with -v
        self._ray.data.DataContext.get_current().enable_progress_bars = verbose
        logging.getLogger("ray.data").setLevel(logging.INFO if verbose else logging.ERROR)
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
        o = self.options
        config = {"model": self.model, "device": o.device, "threads": max(1, int(o.cpus_per_actor)),
                  "embed_kw": self.embed_kw, "out_dir": None if out_dir is None else str(Path(out_dir).resolve())}
        given = {os.path.abspath(p): p for p in paths}  # workers get absolute paths (their cwd is not ours)
        actors = self.actors()
        batch = max(1, min(o.batch_size, -(-len(paths) // (4 * actors))))  # >= 4 batches per actor
        # Ray Data's actor pool restarts a dead actor and runs its batch again (max_restarts and
        # max_task_retries -1 by default); the dead one's output never reached this process
        dataset = self._ray.data.from_items([{"path": p} for p in given]).map_batches(
            _EmbedActor, fn_constructor_kwargs=config, batch_size=batch, batch_format="numpy",
            num_cpus=o.cpus_per_actor, num_gpus=o.gpus_per_actor or None,
            compute=self._ray.data.ActorPoolStrategy(size=actors))
        for row in dataset.iter_rows():
            if row["error"]:
                error = AudioError(given[row["path"]], row["error"].replace(row["path"], given[row["path"]]))
                if errors is None:
                    raise error
                errors.append(error)
                continue
            embedded = EmbeddingSet.load(io.BytesIO(row["set"]))
            embedded.path = given[row["path"]]
            yield embedded
