#!/usr/bin/env bash
# Set up datamill on a fresh machine: a virtualenv in .venv with every extra and the dev tools.
# Idempotent and quick when nothing changed (a stamp records what was installed).
# torch is pinned through constraints.txt to the CPU build cached on these machines; an unpinned
# torch (pulled in by sentence-transformers) would fetch several GB of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=".venv/.datamill-installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # llama-cpp-python builds from source the first time (~3-4 minutes on 2 cores)
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
  rm -f .venv/.datamill-installed-*
  touch "$stamp"
fi
if [ "${DATAMILL_SKIP_BROWSER:-0}" != "1" ] && [ -x scripts/install-browser.sh ]; then
  scripts/install-browser.sh
fi
