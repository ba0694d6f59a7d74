#!/usr/bin/env bash
# The quick path: the static checks and the pure unit tests, in seconds, without apt-get, Go or
# root (only the Python virtual environment is made). hack/test.sh runs everything.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/bootstrap.sh --python
hack/static.sh
echo "==> pytest tests/unit"
.venv/bin/pytest -q tests/unit "$@"
