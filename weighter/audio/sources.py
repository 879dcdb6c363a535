"""What the user points at: one audio file, a directory tree, a file list or a manifest CSV.

A manifest is a CSV with a header row and at least the column ``path``; ``likes`` holds the
file-level labels separated by ``;`` (e.g. ``calls/001.flac,alice;bob``). Relative paths are
taken relative to the manifest's own directory, so a corpus folder can be moved whole.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from weighter.audio.io import AUDIO_EXTENSIONS
from weighter.errors import ManifestError, WeighterError

LIKES_SEPARATOR = ";"


@dataclass(frozen=True)
class AudioSource:
    """One input file and, when a manifest gave them, its file-level likes.

    Attributes
    ----------
    path : Path
        The audio file.
    likes : tuple of str
        File-level labels (e.g. the speakers of a call); empty when none are known.

    Examples
    --------
    >>> from pathlib import Path
    >>> from weighter.audio import AudioSource
    >>> AudioSource(Path("calls/001.flac"), ("alice", "bob")).likes
    ('alice', 'bob')
    """

    path: Path
    likes: tuple[str, ...] = field(default=())


def discover(target: str | Path, require_likes: bool = False) -> list[AudioSource]:
    """Expand what a user points at into audio sources.

    Parameters
    ----------
    target : str or Path
        An audio file; a directory (searched recursively for ``AUDIO_EXTENSIONS``); a file list
        (``.txt`` or ``.lst``, one path a line, ``#`` comments); or a manifest (``.csv``, see
        ``read_manifest``). Relative paths in lists and manifests are relative to their file.
    require_likes : bool, default False
        Refuse a target where no file carries likes (training needs them).

    Returns
    -------
    list of AudioSource
        In a stable order (sorted paths for a directory, file order otherwise).

    Raises
    ------
    WeighterError
        No such file or directory, or a directory without audio files.
    ManifestError
        A malformed list or manifest, or no likes where ``require_likes``.

    Examples
    --------
    >>> from weighter.audio import discover
    >>> sources = discover("corpus/manifest.csv")  # doctest: +SKIP
    >>> sources[0].path, sources[0].likes  # doctest: +SKIP
    (PosixPath('corpus/audio/conv_00000.flac'), ('espeak-en-us+0',))
    """
    target = Path(target)
    if not target.exists():
        raise WeighterError(f"{target}: no such file or directory")
    if target.is_dir():
        files = sorted(p for p in target.rglob("*") if p.is_file() and _is_audio(p))
        if not files:
            raise WeighterError(f"{target}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found")
        sources = [AudioSource(p) for p in files]
    elif target.suffix.lower() == ".csv":
        sources = read_manifest(target)
    elif target.suffix.lower() in (".txt", ".lst"):
        sources = _read_file_list(target)
    else:
        sources = [AudioSource(target)]
    if require_likes and not any(s.likes for s in sources):
        raise ManifestError(f"{target}: no file carries likes (a manifest with a 'likes' column is needed)")
    return sources


def read_manifest(path: str | Path) -> list[AudioSource]:
    """Read a manifest CSV: a header row with at least ``path``, optionally ``likes``.

    Parameters
    ----------
    path : str or Path
        The CSV (UTF-8). ``likes`` separates labels with ``;``; relative paths are taken
        relative to the manifest's directory.

    Returns
    -------
    list of AudioSource
        One per row, in file order.

    Raises
    ------
    ManifestError
        Not UTF-8, malformed, no ``path`` column, an empty path, or no rows.

    Examples
    --------
    >>> from weighter.audio import read_manifest
    >>> [s.likes for s in read_manifest("corpus/manifest.csv")][:2]  # doctest: +SKIP
    [('alice', 'bob'), ('carol',)]
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            if "path" not in columns:
                found = ", ".join(columns) if columns else "nothing"
                raise ManifestError(f"{path}: missing column 'path' (header has: {found})")
            reader.fieldnames = columns
            sources = []
            for line, row in enumerate(reader, start=2):
                file = (row.get("path") or "").strip()
                if not file:
                    raise ManifestError(f"{path}: line {line}: empty 'path'")
                likes = tuple(
                    like.strip() for like in (row.get("likes") or "").split(LIKES_SEPARATOR) if like.strip()
                )
                sources.append(AudioSource(_resolve(path.parent, file), likes))
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not a UTF-8 text CSV") from None
    except csv.Error as error:
        raise ManifestError(f"{path}: malformed CSV ({error})") from None
    if not sources:
        raise ManifestError(f"{path}: manifest lists no files")
    return sources


def write_manifest(path: str | Path, rows: list[AudioSource]) -> None:
    """Write a manifest CSV (``path,likes``) that ``read_manifest`` reads back.

    Paths under the manifest's directory are written relative to it, so the folder can move.

    Parameters
    ----------
    path : str or Path
        The CSV to write (replaced if it exists).
    rows : list of AudioSource

    Examples
    --------
    >>> from pathlib import Path
    >>> from weighter.audio import AudioSource, write_manifest
    >>> write_manifest("c/manifest.csv", [AudioSource(Path("c/a.flac"), ("alice",))])  # doctest: +SKIP
    """
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "likes"])
        for source in rows:
            file = source.path
            try:
                file = file.relative_to(path.parent)
            except ValueError:
                pass
            writer.writerow([file.as_posix(), LIKES_SEPARATOR.join(source.likes)])


def _read_file_list(path: Path) -> list[AudioSource]:
    lines = [l.strip() for l in path.read_text(encoding="utf-8").splitlines()]
    files = [l for l in lines if l and not l.startswith("#")]
    if not files:
        raise ManifestError(f"{path}: file list is empty")
    return [AudioSource(_resolve(path.parent, f)) for f in files]


def _resolve(base: Path, file: str) -> Path:
    p = Path(file)
    return p if p.is_absolute() else base / p


def _is_audio(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS
