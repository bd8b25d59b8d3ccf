"""Hold the policy bundle in force and reload it when its files change.

Invariants (the decision point relies on them):

1. ``PolicyStore.bundle`` is always a bundle that loaded and validated completely;
   there is no moment at which a half-loaded set is visible (the reference is
   swapped only after a full load).
2. A new version on disk that fails to load is rejected: the last good bundle stays
   in force, the failure is kept in ``last_error`` (and written to the audit record
   of every call until a good version loads), and it is logged once.
3. A store is never empty: construction fails with :class:`PolicyError` when the
   first load fails, so a client does not start with a broken policy set.
"""

from __future__ import annotations

import logging
import threading
import weakref
from pathlib import Path

from ._bundle import PolicyBundle, PolicyError, load_bundle

__all__ = ["PolicyStore"]

_log = logging.getLogger("secure_ds.policy")


def _signature(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when a file of the folder is added, removed, replaced or edited."""
    entries: list[tuple[str, int, int]] = []
    for sub in (folder, folder / "tests"):
        try:
            children = list(sub.iterdir())
        except OSError:
            continue
        for path in children:
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(entries))


class PolicyStore:
    """The bundle in force for one folder, reloaded by a watcher thread every
    ``reload_interval`` seconds when the folder changed (``0`` turns watching off;
    :meth:`reload` reloads on demand either way)."""

    def __init__(self, directory: Path | str, *, reload_interval: float = 2.0) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._signature = _signature(self.directory)
        self._bundle = load_bundle(self.directory)
        self.last_error: PolicyError | None = None
        self._closed = threading.Event()
        self._watcher: threading.Thread | None = None
        if reload_interval > 0:
            self._watcher = threading.Thread(
                target=_watch,
                args=(weakref.ref(self), self._closed, reload_interval),
                name="secure-ds-policy-watch",
                daemon=True,
            )
            self._watcher.start()

    @property
    def bundle(self) -> PolicyBundle:
        return self._bundle

    def reload(self) -> bool:
        """Load the folder again. True when a new bundle is now in force; False when
        nothing changed or the new version was rejected (see ``last_error``)."""
        with self._lock:
            signature = _signature(self.directory)
            if signature == self._signature and self.last_error is None:
                return False
            self._signature = signature
            try:
                bundle = load_bundle(self.directory)
            except PolicyError as exc:
                if self.last_error is None or str(self.last_error) != str(exc):
                    _log.error(
                        "policy reload rejected, keeping revision %s: %s",
                        self._bundle.label,
                        exc,
                    )
                self.last_error = exc
                return False
            if bundle.revision == self._bundle.revision:
                self.last_error = None
                return False
            _log.info("policy reloaded: revision %s replaces %s", bundle.label, self._bundle.label)
            self._bundle = bundle
            self.last_error = None
            return True

    def check(self) -> bool:
        """Reload only if the folder changed since the last look (cheap: stats only)."""
        if _signature(self.directory) == self._signature:
            return False
        return self.reload()

    def close(self) -> None:
        self._closed.set()


def _watch(ref: weakref.ref[PolicyStore], closed: threading.Event, interval: float) -> None:
    # holds the store only weakly: a store nobody uses any more stops its watcher
    while not closed.wait(interval):
        store = ref()
        if store is None:
            return
        try:
            store.check()
        except Exception:  # the watcher must never die; the store keeps its bundle
            _log.exception("policy watcher failed; will retry")
        del store
