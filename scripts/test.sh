#!/usr/bin/env bash
# Installs everything the tests need into .venv, then runs lint, type checks and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
.venv/bin/ruff check widen receiver bot tests
.venv/bin/mypy widen receiver bot
.venv/bin/pytest -q "$@"
