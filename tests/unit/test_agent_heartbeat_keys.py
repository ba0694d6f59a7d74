"""The heartbeat keys as the kubelet mounts them: read, checked, re-read after an update."""

from __future__ import annotations

from pathlib import Path

import pytest

from leifur.agent.heartbeat_keys import KeyDirectory, KeyProblem, keyring_of, read_keys
from leifur.agent.heartbeat_wire import Keyring
from leifur_dev import secretvolume

A, B, C = b"a" * 32, b"b" * 32, b"c" * 32
R = b"r" * 30 + b" \n"

CASES = {
    # name: (files, expected Keyring or a fragment of the error)
    "current-only": ({"current": A}, Keyring(A, (A,))),
    "rotation-staged": ({"current": A, "next": B}, Keyring(A, (A, B))),
    "rotation-switched": ({"current": B, "previous": A}, Keyring(B, (B, A))),
    "all-three": ({"current": B, "next": C, "previous": A}, Keyring(B, (B, C, A))),
    # Random bytes may end in b"\n" or b" ": still 32 bytes of key, not 31 (this failed 1 start in 40).
    "random-key-ending-in-whitespace": ({"current": R}, Keyring(R, (R,))),
    "same-key-in-two-slots": ({"current": A, "previous": A}, Keyring(A, (A,))),
    "no-current": ({"next": A}, "no heartbeat key"),
    "empty-directory": ({}, "--insecure-heartbeats"),
    "short-key": ({"current": b"secret"}, "has 6 bytes; at least 32"),
    "short-previous": ({"current": A, "previous": b"x"}, "'previous'"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_keyring_of(name: str, tmp_path: Path) -> None:
    files, expected = CASES[name]
    for slot, data in files.items():
        (tmp_path / slot).write_bytes(data)
    if isinstance(expected, Keyring):
        assert keyring_of(str(tmp_path), read_keys(str(tmp_path))) == expected
    else:
        with pytest.raises(KeyProblem, match=expected):
            keyring_of(str(tmp_path), read_keys(str(tmp_path)))


def mount(tmp_path: Path, files: dict[str, bytes]) -> None:
    secretvolume.project(tmp_path, files)


def test_an_update_of_the_mounted_secret_is_picked_up(tmp_path: Path) -> None:
    mount(tmp_path, {"current": A})
    keys = KeyDirectory(str(tmp_path), every=0)
    assert keys.ring() == Keyring(A, (A,))
    mount(tmp_path, {"current": A, "next": B})
    assert keys.ring() == Keyring(A, (A, B))
    mount(tmp_path, {"current": B, "previous": A})
    assert keys.ring() == Keyring(B, (B, A))


def test_a_broken_update_keeps_the_keys_in_use(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mount(tmp_path, {"current": A})
    keys = KeyDirectory(str(tmp_path), every=0)
    mount(tmp_path, {"next": B})  # someone deleted `current` from the Secret
    assert keys.ring() == Keyring(A, (A,))
    assert keys.ring() == Keyring(A, (A,))
    assert [r.message for r in caplog.records if "keeping" in r.message] == \
        [f"keeping the heartbeat keys in use: no heartbeat key: {tmp_path}/current does not exist. The agent expects "
         f"the Secret leifur-heartbeat-key (which leifur-controller creates) mounted at {tmp_path}; pass "
         "--heartbeat-key-dir if it is elsewhere, or --insecure-heartbeats to run without authentication"]


def test_keys_are_re_read_at_most_every_interval(tmp_path: Path) -> None:
    mount(tmp_path, {"current": A})
    keys = KeyDirectory(str(tmp_path), every=3600)
    mount(tmp_path, {"current": B, "previous": A})
    assert keys.ring() == Keyring(A, (A,))
