#!/usr/bin/env bash
# Installs everything the tests need into .venv, then runs lint, type checks and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[test]'
.venv/bin/ruff check widen receiver bot tests
.venv/bin/mypy widen receiver bot
.venv/bin/pytest -q "$@"
