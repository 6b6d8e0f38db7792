"""Try every class of bad input and bad params we know of against the stage commands, as a new user would,
and print what each gave: a clear error (status 1, the user's file or the params key named, no traceback,
the previous outputs untouched), a repair or skip the stage printed, a silent acceptance, or a traceback.

    python scripts/bad_input_census.py            # plain function calls (GENREC_ORCHESTRATOR=none)
    python scripts/bad_input_census.py --prefect  # through a Prefect server, as `dvc repro` runs the stages

The cases and how each is judged are in tests/bad_input_cases.py (tests/test_bad_input.py runs them too).
Each case runs in its own temporary folder laid out like the repository root: a copy of a clean run (its
outputs are "the previous outputs"), then the bad input or params, then the stage command(s) again.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.bad_input_cases import CASES, CleanRuns, command_runner, stage_env, try_case  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefect", action="store_true", help="run the stages through a Prefect server")
    args = ap.parse_args()
    env = stage_env()
    with contextlib.ExitStack() as stack:
        if args.prefect:
            from pipeline.orchestration.flows import prefect_server

            env.pop("GENREC_ORCHESTRATOR", None)
            env["PREFECT_HOME"] = stack.enter_context(tempfile.TemporaryDirectory())
            env["PREFECT_API_URL"] = stack.enter_context(prefect_server(env))
        else:
            env["GENREC_ORCHESTRATOR"] = "none"
        run = command_runner(env)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        clean = CleanRuns(tmp / "clean", run)
        good = 0
        print("| input class | stage | expected | outcome | message or note |\n| --- | --- | --- | --- | --- |")
        t0 = time.perf_counter()
        for n, case in enumerate(CASES):
            verdict = try_case(case, clean.workspace(case, tmp / f"case{n}"), run)
            ok = verdict.outcome == case.outcome
            good += ok
            message = verdict.message.replace(str(tmp), "…").replace("|", "\\|")
            print(f"| {case.name} | {case.stage} | {case.expect} | {verdict.outcome}{'' if ok else ' (!)'} "
                  f"| {message[:160]} |", flush=True)
    print(f"\n{good} of {len(CASES)} input classes gave a clear error or a printed repair "
          f"({'Prefect' if args.prefect else 'no orchestrator'}; {time.perf_counter() - t0:.0f} s)")
    sys.exit(0 if good == len(CASES) else 1)


if __name__ == "__main__":
    main()
