#!/usr/bin/env bash
# Creates .venv (if absent) and installs the pipeline into it.
# torch comes first and explicitly: a plain `pip install torch` on Linux pulls the CUDA build
# (several GB). On a machine without an NVIDIA driver we ask for the CPU build 2.13.0+cpu: a local
# wheel or a configured find-links serves it where there is one, and PyTorch's CPU index otherwise.
# With a GPU (nvidia-smi works) the default PyPI build, which bundles CUDA, is what we want.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install --quiet --upgrade pip
if .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "torch already installed: $(.venv/bin/python -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
  $PIP install "torch==2.13.0"
else
  $PIP install "torch==2.13.0+cpu" 2>/dev/null \
    || $PIP install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
fi
# Everything else at the exact versions of scripts/requirements.lock (hash-checked, nothing resolved at install
# time): the versions that wrote the committed dvc.lock. GENREC_UNLOCKED=1 takes the newest versions that
# pyproject.toml's ranges allow instead (other outputs than dvc.lock records are then to be expected).
# Regenerate or upgrade the lock with scripts/lock_environment.sh.
if [ "${GENREC_UNLOCKED:-0}" = 1 ]; then
  $PIP install --quiet -e ".[bench,browser]"
else
  if ! .venv/bin/python -c 'import platform, sys; sys.exit(not (sys.version_info[:2] == (3, 11)
      and platform.system() == "Linux" and platform.machine() == "x86_64"))'; then
    echo "scripts/requirements.lock is for CPython 3.11 on Linux x86-64; this is $(.venv/bin/python -c \
      'import platform; print(platform.python_version(), platform.system(), platform.machine())')." >&2
    echo "Run with GENREC_UNLOCKED=1 to install from pyproject.toml's ranges instead." >&2
    exit 1
  fi
  $PIP install --quiet --no-deps --require-hashes -r scripts/requirements.lock
  $PIP install --quiet --no-deps -e .
  $PIP check
fi
# The browser test (tests/test_mlflow_ui.py) and the MLflow screenshot of docs/operations.md drive Debian's Chromium
# with playwright (playwright's own browser download needs the internet at large). Installed only where
# we may (root with apt-get; GENREC_NO_BROWSER=1 skips it); elsewhere that one test is skipped, saying why.
if ! command -v chromium >/dev/null 2>&1 && [ "${GENREC_NO_BROWSER:-0}" != 1 ] \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
    || echo "note: chromium not installed; tests/test_mlflow_ui.py will be skipped"
fi
echo "installed: activate with '. .venv/bin/activate'"
