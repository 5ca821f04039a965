#!/usr/bin/env bash
# Installs widen-bot into .venv and runs the whole flow against a local DAM and a local Slack.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e .
exec .venv/bin/widen-bot sandbox "$@"
