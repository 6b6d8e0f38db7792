"""Interrupt every kind of stage (embed, tokenize, train, evaluate, report) with SIGTERM and SIGKILL while it writes
its outputs, run it again, and print what each case gave: the exit status and message, whether the re-run wrote
the uninterrupted run's bytes, and the temporary files left behind.

    python scripts/interruption_census.py

The cases are in tests/interruption_cases.py (tests/test_interruptions.py runs them too).
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.interruption_cases import INTERRUPTED, SIGNALS, interrupt, prepare  # noqa: E402


def main() -> None:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        clean = Path(tmp) / "clean"
        prepare(clean)
        print("| stage | signal | signalled while | exit status | message | same bytes after re-run | left behind "
              "| after the re-run |\n| --- | --- | --- | --- | --- | --- | --- | --- |")
        good = 0
        for stage in INTERRUPTED:
            for sig in SIGNALS:
                work = Path(tmp) / f"{stage}-{sig}"
                shutil.copytree(clean, work)
                v = interrupt(work, stage, sig)
                good += v.same_bytes and not v.remaining
                print(f"| {v.stage} | {v.signal} | {v.signalled_while} | {v.exit_status} | {v.message[:80]} "
                      f"| {'yes' if v.same_bytes else 'NO'} | {', '.join(v.leftovers) or 'nothing'} "
                      f"| {', '.join(v.remaining) or 'nothing'} |", flush=True)
    cases = len(INTERRUPTED) * len(SIGNALS)
    print(f"\n{good} of {cases} interrupted stages wrote the uninterrupted bytes when run again "
          f"({time.perf_counter() - t0:.0f} s)")
    sys.exit(0 if good == cases else 1)


if __name__ == "__main__":
    main()
