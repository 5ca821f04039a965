#!/usr/bin/env bash
# Installs widen-bot into .venv and runs the whole flow against a local DAM and a local Slack.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/widen-bot sandbox "$@"
