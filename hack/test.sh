#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what it needs, then runs lint, the
# unit, control-plane and netns tests, and finally checks that nothing was left behind.
# Run as root: the netns tests build network namespaces. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/bootstrap.sh
echo "==> ruff"
.venv/bin/ruff check .
echo "==> docs"
# The site must build with --strict: a broken link, anchor or page left out of the nav fails CI.
site=$(mktemp -d)
.venv/bin/mkdocs build --strict --quiet -d "$site" || { rm -rf "$site"; exit 1; }
rm -rf "$site"
echo "==> pytest"
.venv/bin/pytest "$@"
echo "==> after the suite: nothing of ours may remain"
LEIFUR_AFTER_SUITE=1 .venv/bin/pytest -q -p no:cacheprovider tests/after_suite
