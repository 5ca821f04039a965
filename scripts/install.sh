#!/usr/bin/env bash
# Makes .venv and installs widen-bot into it (editable, so code changes need no reinstall), with the
# extras named in $1 (e.g. "test"). Skipped when the same pyproject.toml was installed with the same
# extras before: a stamp in .venv records it. A fresh clone, or a changed pyproject.toml, installs.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
target="."
[ -n "$extras" ] && target=".[$extras]"
stamp=".venv/.installed-$(cat pyproject.toml <(echo "$extras") | sha256sum | cut -c1-16)"
if [ -x .venv/bin/python ] && [ -f "$stamp" ]; then
  exit 0
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e "$target"
touch "$stamp"
