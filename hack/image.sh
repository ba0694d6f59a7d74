#!/usr/bin/env bash
# Builds the container image from the Dockerfile with podman, without a daemon and without a
# registry (run as root; hack/bootstrap.sh installs podman, runc and mmdebstrap): a Debian
# bookworm base made by mmdebstrap, the wheels downloaded on the host and installed offline.
# Base, wheels and image are cached in ~/.cache/leifur, keyed by their inputs: a second run with
# the same Dockerfile, constraints and sources builds nothing. Prints the image's name and size.
#   hack/image.sh [--revision REV] [--tag NAME] [--save PATH]     (see docs/operations/image.md)
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m leifur_dev.image "$@"
