#!/usr/bin/env bash
# Prints the path of a Python that has scripts/geoip/requirements.txt (mmdb-writer, maxminddb)
# installed, first creating a venv and installing them with pip if needed. Progress goes to
# stderr, so it can be used as:  py="$(scripts/geoip/pyenv.sh)"; "$py" scripts/geoip/build_fixture.py
#
# Usage: scripts/geoip/pyenv.sh [VENV_DIR]
#   VENV_DIR defaults to $VEIL_GEOIP_VENV, else ${VEIL_DATA_DIR:-./var}/geoip/.venv.
# Without the venv module (Debian: apt-get install python3-venv), falls back to pip --user.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-${VEIL_GEOIP_VENV:-${VEIL_DATA_DIR:-./var}/geoip/.venv}}"
req="$here/requirements.txt"
check='import mmdb_writer, maxminddb'

command -v python3 >/dev/null 2>&1 || { echo "geoip: python3 not found (apt-get install python3)" >&2; exit 1; }

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$check" 2>/dev/null; then
  echo "$venv/bin/python"
  exit 0
fi

if [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >/dev/null 2>&1; then
  echo "geoip: installing $(grep -v '^#' "$req" | tr '\n' ' ')into $venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
  echo "$venv/bin/python"
  exit 0
fi
rm -rf "$venv"

if python3 -c "$check" 2>/dev/null; then
  echo python3
  exit 0
fi
echo "geoip: no venv module (Debian: apt-get install python3-venv); trying pip install --user" >&2
if python3 -m pip install --quiet --disable-pip-version-check --user -r "$req" >&2 \
   && python3 -c "$check" 2>/dev/null; then
  echo python3
  exit 0
fi
echo "geoip: could not install $req; install python3-venv and re-run" >&2
exit 1
