#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what it needs, then runs the static checks
# (ruff, the import contracts, mypy), the unit, packaging, docs, control-plane and netns tests,
# and finally checks that nothing was left behind.
# Run as root: the netns tests build network namespaces. Extra arguments go to pytest.
# The pure checks alone, in seconds and without apt or Go: hack/check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/bootstrap.sh
hack/static.sh
echo "==> pytest"
.venv/bin/pytest "$@"
echo "==> after the suite: nothing of ours may remain"
LEIFUR_AFTER_SUITE=1 .venv/bin/pytest -q -p no:cacheprovider tests/after_suite
