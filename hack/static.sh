#!/usr/bin/env bash
# The static checks: lint, the layers (import contracts over the installed layout), types.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "==> ruff"
.venv/bin/ruff check .
echo "==> import contracts"
.venv/bin/python -m leifur_dev.layout
echo "==> mypy"
.venv/bin/mypy
