#!/usr/bin/env bash
# The demo, on a fresh machine: installs what it needs, then runs `leifur-dev demo`.
# Run as root: it builds network namespaces. Extra arguments go to `leifur-dev demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/bootstrap.sh
exec .venv/bin/leifur-dev demo "$@"
