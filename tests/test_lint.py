"""The project's code passes ruff with the rules of pyproject.toml ([tool.ruff.lint]), so CI fails on a lint error."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing_in_the_project_code():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "pipeline", "stages", "tests",
                             "scripts", "benchmarks"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
