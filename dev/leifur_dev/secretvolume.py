"""A Secret volume as the kubelet writes it, for agents that run without a kubelet (the lab).

The kubelet puts each version of the Secret in a new hidden directory and swaps the `..data`
symlink to it atomically; each data key is a symlink through `..data`. A reader never sees half
an update, and a key removed from the Secret disappears from the directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def project(directory: Path, files: dict[str, bytes]) -> None:
    """Make `directory` show exactly `files` (data key -> bytes), in one atomic step."""
    directory.mkdir(parents=True, exist_ok=True)
    link = directory / "..data"
    old = link.resolve() if link.is_symlink() else None
    version = Path(tempfile.mkdtemp(prefix="..", dir=directory))
    for key, data in files.items():
        (version / key).write_bytes(data)
        (version / key).chmod(0o400)
    swap = directory / "..data_tmp"
    swap.unlink(missing_ok=True)
    swap.symlink_to(version.name)
    os.replace(swap, link)
    for entry in directory.iterdir():
        if entry.name.startswith(".."):
            continue
        if entry.name not in files:
            entry.unlink()
    for key in files:
        if not (directory / key).is_symlink():
            (directory / key).symlink_to(f"..data/{key}")
    if old is not None and old != version.resolve():
        shutil.rmtree(old)
