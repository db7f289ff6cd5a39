"""The API keys the included server accepts, each with a name.

Keys come from a folder (``--api-keys-dir``, or ``RUNTIME_API_KEYS_DIR``): every regular file
whose name does not start with ``.`` holds one key, and its file name is the key's name (what
limits and metrics are kept by). That is how Kubernetes mounts a Secret: one file per Secret
key, through symlinks into a ``..data`` folder that the kubelet swaps atomically when the Secret
changes. The folder is looked at again at most once a second (a few ``stat`` calls) and re-read
when anything in it changed, so a rotated Secret takes effect without a restart; a folder that
cannot be read keeps the keys read last, and says so in one log line.

The single key of ``RUNTIME_API_KEY`` (else ``OPENAI_API_KEY``) is accepted too, named
``default``.

Only a SHA-256 digest of each key is kept. A presented key is hashed once and compared with every
digest with :func:`hmac.compare_digest`, all of them, whichever matches: the time taken says
neither which key matched nor how long the keys are. Keys never appear in logs, metrics or error
messages; names do.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from runtime.errors import UsageError

log = logging.getLogger("runtime.keys")

DEFAULT_NAME = "default"  # the name of the key from RUNTIME_API_KEY
ANONYMOUS = "anonymous"  # who calls a server without keys (one name for every caller)
CHECK_EVERY_S = 1.0
MAX_KEY_BYTES = 4096  # a bigger file is not a key (a folder mounted by mistake)
DATA_LINK = "..data"  # the kubelet's link to the current version of a Secret volume


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


class KeyRing:
    """The accepted keys: ``(name, digest)`` pairs, from ``directory`` and ``single``.

    ``closed`` is True when any source of keys is configured: the server then refuses callers
    without a matching key, even while the folder holds none (a Secret emptied by mistake closes
    the server; it never opens it).
    """

    def __init__(self, directory: str | Path | None = None, single: str | None = None, *,
                 clock: Callable[[], float] = time.monotonic, check_every: float = CHECK_EVERY_S):
        self.directory = Path(directory) if directory else None
        self.clock = clock
        self.check_every = check_every
        self._single = [(DEFAULT_NAME, _digest(os.fsencode(single)))] if single else []  # the bytes of the variable
        self._from_dir: list[tuple[str, bytes]] = []
        self._signature: object = None
        self._checked_at = clock()
        self._failing: str | None = None  # the last read error, logged once
        if self.directory is not None:
            if not self.directory.is_dir():
                raise UsageError(f"API keys folder {self.directory} does not exist or is not a folder")
            self._reload(first=True)

    @property
    def closed(self) -> bool:
        return self.directory is not None or bool(self._single)

    @property
    def names(self) -> list[str]:
        """The names of the keys accepted now (for logs and tests; never the keys)."""
        return [name for name, _ in self._single + self._from_dir]

    # ---------------------------------------------------------------- matching
    def match(self, *presented: str | None) -> str | None:
        """The name of the key among ``presented`` (header values) that is accepted, else None.

        Every presented value is compared with every key; there is no early exit."""
        self.refresh()
        keys = self._single + self._from_dir
        found: str | None = None
        for value in presented:
            if not value:
                continue
            digest = _digest(value.encode("latin-1", errors="replace"))
            for name, known in keys:
                if hmac.compare_digest(digest, known) and found is None:
                    found = name
        return found

    # ---------------------------------------------------------------- the folder
    def refresh(self, *, force: bool = False) -> None:
        """Look at the folder if a second has passed since the last look; re-read it if it changed."""
        if self.directory is None:
            return
        now = self.clock()
        if not force and now - self._checked_at < self.check_every:
            return
        self._checked_at = now
        self._reload()

    def _reload(self, first: bool = False) -> None:
        assert self.directory is not None
        try:
            signature = _signature(self.directory)
            if signature == self._signature:
                self._failing = None
                return
            keys = _read(self.directory)
        except OSError as exc:
            problem = f"{type(exc).__name__}: {exc.strerror or 'cannot be read'}"
            if problem != self._failing:
                log.error("cannot read the API keys in %s (%s); the %d keys read before stay in use",
                          self.directory, problem, len(self._from_dir))
                self._failing = problem
            if first:
                raise UsageError(f"API keys folder {self.directory}: cannot be read ({problem})") from None
            return
        self._failing = None
        self._signature = signature
        before = {name for name, _ in self._from_dir}
        self._from_dir = keys
        names = [name for name, _ in keys]
        if first or set(names) != before:
            if names:
                log.info("API keys from %s: %s", self.directory, ", ".join(names))
            else:
                log.warning("no API keys in %s: every API request is refused until one is added", self.directory)
        else:
            log.info("API keys in %s changed: %s", self.directory, ", ".join(names))
        digests: dict[bytes, str] = {}
        for name, digest in self._single + keys:
            if digest in digests:
                log.warning("API keys %s and %s are the same key; requests with it count as %s", digests[digest], name, digests[digest])
            digests.setdefault(digest, name)


def _signature(directory: Path) -> object:
    """What changes when the folder's keys may have: its own inode and mtime, the target of
    ``..data`` and each visible entry's inode, mtime and size (symlinks followed)."""
    st = os.stat(directory)
    entries: list[object] = [st.st_ino, st.st_mtime_ns]
    for name in sorted(os.listdir(directory)):
        path = directory / name
        if name == DATA_LINK:
            entries.append((name, os.readlink(path) if path.is_symlink() else None))
        if name.startswith("."):
            continue
        try:
            s = os.stat(path)
        except FileNotFoundError:  # a link left dangling while the kubelet swaps versions
            entries.append((name, None))
            continue
        entries.append((name, s.st_ino, s.st_mtime_ns, s.st_size, s.st_mode))
    return tuple(entries)


def _read(directory: Path) -> list[tuple[str, bytes]]:
    """(name, digest) of each key file, by name. Entries starting with ``.`` (the kubelet's
    ``..data`` and versions), folders and dangling links are not keys; an empty or oversized
    file is skipped with a warning naming it."""
    keys = []
    for name in sorted(os.listdir(directory)):
        if name.startswith("."):
            continue
        path = directory / name
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(mode):
            continue
        with open(path, "rb") as fh:
            value = fh.read(MAX_KEY_BYTES + 1).strip()
        if len(value) > MAX_KEY_BYTES:
            log.warning("API key file %s is larger than %d bytes; it is not read as a key", name, MAX_KEY_BYTES)
            continue
        if not value:
            log.warning("API key file %s is empty; it is skipped", name)
            continue
        keys.append((name, _digest(value)))
    return keys
