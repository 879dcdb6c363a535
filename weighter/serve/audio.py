"""Which audio file the app may send: only a file the store holds, found by its id.

A client never names a path. The file's stored path (resolved when it was added) must still
resolve to itself, so a symlink put in its place, or in place of a folder above it, is refused;
with a corpus root, the file must lie inside it.
"""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path

from weighter.errors import WeighterError
from weighter.index import Store

# Types the browsers' <audio> element knows; mimetypes lacks some of them on Debian.
MEDIA_TYPES = {".flac": "audio/flac", ".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg",
               ".opus": "audio/ogg", ".m4a": "audio/mp4", ".webm": "audio/webm"}


class Refused(WeighterError):
    """A request the app turns down, with its HTTP status (404: no such file, 403: not allowed,
    409: another model, 413: too large, 422: unusable input); the app answers
    ``{"error": str(error)}`` with that status.

    Parameters
    ----------
    status : int
        The HTTP status.
    message : str
        One line: the thing and the reason.

    Examples
    --------
    >>> raise Refused(404, "file 7: not in the store")  # doctest: +SKIP
    """

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def stored_audio(store: Store, file_id: int, root: str | Path | None = None) -> tuple[Path, str]:
    """The audio file of stored file ``file_id`` and its media type, if it may be sent.

    Parameters
    ----------
    store : Store
    file_id : int
        The store's id of the file (``Store.file_id``).
    root : str, Path or None
        The corpus root: when given, the file must lie inside it.

    Returns
    -------
    path : Path
        The stored (resolved) path.
    media_type : str
        E.g. ``"audio/flac"``.

    Raises
    ------
    Refused
        404: no such file in the store, or it is gone from disk; 403: its path now resolves
        elsewhere (a symlink) or lies outside ``root``.

    Examples
    --------
    >>> path, media_type = stored_audio(store, 3, root="calls/")  # doctest: +SKIP
    """
    row = store.db.execute("SELECT path FROM files WHERE id = ?", (int(file_id),)).fetchone()
    if row is None:
        raise Refused(404, f"file {file_id}: not in the store")
    stored = row[0]
    real = os.path.realpath(stored)
    if real != stored:
        raise Refused(403, f"file {file_id}: its stored path now resolves to another place (a symlink); refused")
    if root is not None:
        top = os.path.realpath(root)
        if os.path.commonpath([real, top]) != top:
            raise Refused(403, f"file {file_id}: outside the corpus root {root}; refused")
    if not os.path.isfile(real):
        raise Refused(404, f"file {file_id}: {stored} is no longer on disk")
    suffix = Path(real).suffix.lower()
    return Path(real), MEDIA_TYPES.get(suffix) or mimetypes.guess_type(real)[0] or "application/octet-stream"
