#!/usr/bin/env bash
# Regenerates scripts/requirements.lock, the exact versions (with hashes) that scripts/install.sh installs,
# from the ranges in pyproject.toml, with pip-tools' pip-compile in a throw-away virtual environment.
#   bash scripts/lock_environment.sh                        # add what pyproject.toml gained; keep every other pin
#   bash scripts/lock_environment.sh --upgrade              # newest versions the ranges allow
#   bash scripts/lock_environment.sh --upgrade-package mlflow
# torch is left out (--unsafe-package): install.sh pins it per platform (CPU or CUDA build of one version).
# The lock is for CPython 3.11 on Linux x86-64, the platform of the committed dvc.lock. After an upgrade,
# re-run the pipeline (`dvc repro`) and commit the lock file together with dvc.lock and reports/.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
"$PYTHON" -m venv "$tools"
"$tools/bin/python" -m pip install --quiet pip-tools
"$tools/bin/pip-compile" --quiet --generate-hashes --strip-extras --no-emit-index-url --no-emit-find-links \
  --extra bench --extra browser --unsafe-package torch --output-file scripts/requirements.lock "$@" pyproject.toml
echo "wrote scripts/requirements.lock ($(grep -c '==' scripts/requirements.lock) pinned packages)"
