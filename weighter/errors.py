"""Errors a user can act on. Each carries one line: the thing and the reason."""


class WeighterError(Exception):
    """Base class: the CLI prints ``str(error)`` as one line and exits non-zero.

    Messages speak of the library's parameters. ``cli_hint``, where an error has one, says
    how to act on it from the command line (a ``weighter`` command); the CLI appends it.
    """

    def __init__(self, *args, cli_hint: str | None = None):
        super().__init__(*args)
        self.cli_hint = cli_hint


class AudioError(WeighterError):
    """An audio file that cannot be used (unreadable, empty, too short, silent...)."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ManifestError(WeighterError):
    """A manifest CSV with a missing file, missing columns or malformed rows."""


class CorpusError(WeighterError):
    """A missing TTS engine, a broken utterance bank, or an impossible corpus request."""


class StoreError(WeighterError):
    """A store that cannot be opened, written or read as asked (not a store, another model, a
    second writer, a missing or corrupt FAISS or scores file)."""
