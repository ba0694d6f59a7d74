#!/usr/bin/env bash
# The demo, on a fresh machine: installs what it needs, then runs `leifurctl demo`.
# Run as root: it builds network namespaces. Extra arguments go to `leifurctl demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/bootstrap.sh
exec .venv/bin/leifurctl demo "$@"
