"""The exceptions of mfg_ensemble, one type per failure, raised alike by either kernel backend.

* :class:`ConfigError` — a sweep or problem that cannot run: names the file, the field and
  what is allowed there (the CLI prints it and exits with status 2).
* :class:`StoreMismatch` — the store at a path is not this sweep's (or not a store at all), or
  may not be overwritten; :class:`StoreLocked` — another run is writing it.
* :class:`NoWorkers` — the cluster has no worker to run the members (e.g. a LocalCluster whose
  workers a notebook's kernel interrupt killed), after waiting ``worker_timeout``.
* :class:`Diverged` — a time march blew up (non-finite values, or a CFL sub-step that
  collapsed). The Rust extension raises this very class (``import_exception!``), the NumPy
  reference too; it is a ``FloatingPointError``, so older ``except FloatingPointError`` works.
"""

from __future__ import annotations

from collections.abc import Sequence


class ConfigError(ValueError):
    """A sweep that cannot run: names the file, the field and what is allowed."""

    def __init__(self, source: str, problems: Sequence[tuple[str, str]]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = [f"{field}: {message}" if field else message for field, message in self.problems]
        super().__init__(f"invalid sweep {source}:\n  " + "\n  ".join(lines))


class StoreMismatch(ValueError):
    """The store at a path was made from a different sweep, or is not an mfg_ensemble store."""


class StoreLocked(StoreMismatch):
    """Another run holds the store's lock (the message names its host and pid)."""


class NoWorkers(RuntimeError):
    """The cluster has no worker (waited for one, in vain): the message says what to do."""


class Diverged(FloatingPointError):
    """A time march blew up (non-finite values, or a CFL sub-step that collapsed)."""
