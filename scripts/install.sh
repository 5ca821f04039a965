#!/usr/bin/env bash
# Makes .venv and installs widen-bot into it (editable, so code changes need no reinstall), with the
# extras named in $1 (e.g. "test"). Skipped when this very pyproject.toml was installed before with those
# extras (or, for none, with any): .venv/.installed records the file's hash and the extras installed
# with it. A fresh clone, or any change to pyproject.toml (a revert included), installs again.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
stamp=.venv/.installed
hash="$(sha256sum pyproject.toml | cut -c1-16)"
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(head -n1 "$stamp")" = "$hash" ] \
    && { [ -z "$extras" ] || grep -qx "$extras" <(tail -n +2 "$stamp"); }; then
  exit 0
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e ".${extras:+[$extras]}"
if [ ! -f "$stamp" ] || [ "$(head -n1 "$stamp")" != "$hash" ]; then
  echo "$hash" > "$stamp"  # another pyproject.toml: what was installed with the old one no longer counts
fi
[ -n "$extras" ] && echo "$extras" >> "$stamp"
exit 0
