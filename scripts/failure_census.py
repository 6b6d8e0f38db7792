"""Make a researcher's machine fail under a stage, class by class, and print what each gave: the exit status, the
message a user sees, what was kept and what the re-run (or the other command) gave. None may end in a traceback or be
accepted silently.

    python scripts/failure_census.py            # every class (about 3 minutes on 2 cores)
    python scripts/failure_census.py --only dvc # one group: device, tracking, dvc

The classes and how each is judged are in tests/failure_cases.py (tests/test_failures_device.py,
tests/test_failures_tracking.py and tests/test_failures_dvc.py run them too); bad input is
scripts/bad_input_census.py's, signals scripts/interruption_census.py's.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import failure_cases as fc  # noqa: E402

GROUPS = ("device", "tracking", "dvc")


def cases(tmp: Path, groups: set[str]):
    """Each class's verdict, in turn (every case in a copy of its clean workspace)."""
    if groups & {"device", "tracking"}:
        expected = fc.prepare(tmp / "clean")

        def copy(name: str) -> Path:
            return Path(shutil.copytree(tmp / "clean", tmp / name))
    if "device" in groups:
        for n, name in enumerate(fc.device_errors()):
            yield fc.device_case(copy(f"device{n}"), name, expected)
        from pipeline.orchestration.flows import prefect_server
        from tests.bad_input_cases import stage_env

        with prefect_server(stage_env(PREFECT_HOME=str(tmp / "prefect"))) as api:
            yield fc.device_case_under_prefect(copy("device-prefect"), api, tmp / "prefect")
    if "tracking" in groups:
        for n, case in enumerate((fc.store_locked_at_start, fc.store_locked_for_a_moment, fc.store_locked_to_the_end)):
            yield case(copy(f"tracking{n}"), expected)
    if "dvc" in groups:
        yield fc.second_repro(fc.dvc_workspace(tmp / "dvc-clean"), tmp / "dvc")
        for tracked in (False, True):
            work = tmp / f"queue-{tracked}"
            yield fc.queue_two_workers(fc.dvc_workspace(work / "clean"), work, tracked=tracked)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=GROUPS, action="append", help="run only this group (repeatable)")
    groups = set(ap.parse_args().only or GROUPS)
    t0 = time.perf_counter()
    good = total = 0
    print("| failure class | outcome | exit status | message a user sees | kept | after |\n"
          "| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for v in cases(Path(tmp), groups):
            total += 1
            good += v.ok
            message = v.message.replace(tmp, "…").replace("|", "\\|")
            print(f"| {v.case} | {v.outcome}{'' if v.ok else ' (!)'} | {v.exit_status} | {message} | {v.kept} "
                  f"| {v.after} |", flush=True)
            for problem in v.problems:
                print(f"|   ! {problem.replace(tmp, '…')[:400]} | | | | | |", flush=True)
    print(f"\n{good} of {total} failure classes gave a clear message and lost nothing "
          f"({time.perf_counter() - t0:.0f} s)")
    sys.exit(0 if good == total else 1)


if __name__ == "__main__":
    main()
