"""Leifur: a bare-metal load balancer for Kubernetes."""

import os

# The one place the version is written: the package (pyproject.toml reads it), --version, the
# leifur_build_info metric and the programs' first log line take it from here.
__version__ = "0.1.0"


def revision() -> str:
    """The source revision this build came from: set by the image build, else unknown."""
    return os.environ.get("LEIFUR_REVISION") or "unknown"


def version_line(program: str) -> str:
    """What `--version` prints and the first log line says."""
    return f"{program} {__version__} (revision {revision()})"
