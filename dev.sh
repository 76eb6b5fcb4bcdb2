#!/usr/bin/env bash
# One entry point for a fresh machine: creates .venv and installs slidegrid on first use (idempotent),
# then runs the main job or the tests.
#   ./dev.sh demo [slidegrid demo options]   run the embedded end-to-end job
#   ./dev.sh test [pytest options]           run the test suite
#   ./dev.sh lint                            ruff
#   ./dev.sh setup                           only install
set -euo pipefail
cd "$(dirname "$0")"
VENV=${SLIDEGRID_VENV:-.venv}
PY=${PYTHON:-python3}

setup() {
  local stamp="$VENV/.slidegrid-installed"
  local want
  want=$(cat pyproject.toml requirements-lock.txt | sha256sum | cut -d' ' -f1)
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then return 0; fi
  echo "[dev.sh] installing slidegrid into $VENV (first run takes ~5 minutes)" >&2
  [[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # requirements-lock.txt pins a set verified together (torch/torchvision pair included).
  "$VENV/bin/python" -m pip install -q -c requirements-lock.txt -e ".[dev]"
  echo "$want" > "$stamp"
}

cmd=${1:-help}; shift || true
case "$cmd" in
  setup) setup ;;
  demo) setup; exec "$VENV/bin/slidegrid" demo "$@" ;;
  test) setup; export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}; exec "$VENV/bin/python" -m pytest "$@" ;;
  lint) setup; exec "$VENV/bin/ruff" check platform jobs tests ;;
  *) sed -n '2,7p' "$0"; exit 2 ;;
esac
