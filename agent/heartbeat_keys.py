"""The heartbeat keys, read from the directory where the Secret is mounted, and re-read when it changes.

The kubelet updates a mounted Secret in place (an atomic swap of the directory), about a minute
after the Secret changed, at a different moment on each node. So a rotation stages the new key as
`next` (accepted everywhere) before any agent signs with it; see docs/security.md.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from leifur.model import names

from .heartbeat_wire import Keyring, key_id

log = logging.getLogger(__name__)

SLOTS = (names.HEARTBEAT_KEY_CURRENT, names.HEARTBEAT_KEY_NEXT, names.HEARTBEAT_KEY_PREVIOUS)


class KeyProblem(Exception):
    """The directory holds no usable key; the message says what to do."""


def read_keys(directory: str) -> dict[str, bytes]:
    """Slot name -> key, for the slots present. A key is the file's bytes, all of them: random bytes
    may end in what looks like whitespace, and every agent reads the same file anyway."""
    keys: dict[str, bytes] = {}
    for slot in SLOTS:
        try:
            with open(os.path.join(directory, slot), "rb") as f:
                keys[slot] = f.read()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise KeyProblem(f"cannot read the heartbeat key {os.path.join(directory, slot)}: {e}") from e
    return keys


def keyring_of(directory: str, keys: dict[str, bytes]) -> Keyring:
    """The Keyring the slots make, or KeyProblem saying what is wrong."""
    current = keys.get(names.HEARTBEAT_KEY_CURRENT)
    if current is None:
        raise KeyProblem(
            f"no heartbeat key: {os.path.join(directory, names.HEARTBEAT_KEY_CURRENT)} does not exist. The agent "
            f"expects the Secret {names.HEARTBEAT_SECRET} (which leifur-controller creates) mounted at "
            f"{directory}; pass --heartbeat-key-dir if it is elsewhere, or --insecure-heartbeats to run "
            "without authentication")
    for slot, key in keys.items():
        if len(key) < names.HEARTBEAT_KEY_BYTES:
            raise KeyProblem(f"the heartbeat key {slot!r} in {directory} has {len(key)} bytes; at least "
                            f"{names.HEARTBEAT_KEY_BYTES} are needed (e.g. `openssl rand -hex 32`)")
    accepted = tuple(dict.fromkeys(keys[s] for s in SLOTS if s in keys))
    return Keyring(current, accepted)


def describe(ring: Keyring) -> str:
    return "signing with {}; accepting {}".format(key_id(ring.signing).hex(),
                                                  ", ".join(key_id(k).hex() for k in ring.accepted))


class KeyDirectory:
    """The current Keyring of a key directory. Reading is cheap, so it re-reads at most every
    `every` seconds when asked; a broken update keeps the last good keys (logged once)."""

    def __init__(self, directory: str, every: float = 1.0) -> None:
        self.directory = directory
        self.every = every
        self._ring = keyring_of(directory, read_keys(directory))  # raises: the agent must not start
        self._read_at = time.monotonic()
        self._error = ""
        self._lock = threading.Lock()
        log.info("heartbeat keys from %s: %s", directory, describe(self._ring))

    def ring(self) -> Keyring:
        with self._lock:
            if time.monotonic() - self._read_at >= self.every:
                self._read_at = time.monotonic()
                self._reload()
            return self._ring

    def _reload(self) -> None:
        try:
            ring = keyring_of(self.directory, read_keys(self.directory))
        except KeyProblem as e:
            if str(e) != self._error:
                log.error("keeping the heartbeat keys in use: %s", e)
            self._error = str(e)
            return
        self._error = ""
        if ring != self._ring:
            log.info("heartbeat keys changed: %s", describe(ring))
            self._ring = ring
