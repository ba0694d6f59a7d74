"""Leifur: a bare-metal load balancer for Kubernetes."""

import argparse
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


class _PrintVersion(argparse.Action):
    """argparse's own version action wraps the line at the terminal's width: a 40-hex revision
    would split it, and scripts read it as one line."""

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> None:
        print(version_line(parser.prog))
        parser.exit()


def add_version_flag(parser: argparse.ArgumentParser) -> None:
    """--version on one of the three programs: prints version_line and exits 0."""
    parser.add_argument("--version", action=_PrintVersion, nargs=0, help="print the version and exit")
