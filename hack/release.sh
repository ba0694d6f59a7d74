#!/usr/bin/env bash
# A release's artifacts into OUTDIR (run as root, like hack/image.sh): the image as an OCI
# archive, the packaged chart, the all-in-one leifur.yaml (image REGISTRY/leifur:VERSION, the
# registry a placeholder unless --registry) and the release notes from CHANGELOG.md, with SHA256SUMS.
# VERSION must be the package's and the chart's version and have its CHANGELOG.md entry.
#   hack/release.sh VERSION OUTDIR [--registry REGISTRY]          (see docs/operations/image.md)
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m leifur_dev.release "$@"
