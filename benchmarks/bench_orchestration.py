"""Orchestration overhead per stage: the default without a Prefect server (plain calls), Prefect's temporary server
(`GENREC_ORCHESTRATOR=prefect`), a running Prefect server (`PREFECT_API_URL`), and none.

Runs one real stage process (`python -m stages.report` by default: it reads `data/results` and rewrites
the same report bytes, so `dvc status` stays clean) several times in each mode and prints the median wall
time and the overhead against plain function calls (`GENREC_ORCHESTRATOR=none`). MLflow is off in every
mode (`GENREC_TRACKING=0`), so only orchestration is measured. Also times a no-op `dvc repro` (run it
after a complete `dvc repro`). Needs the outputs of a `dvc repro` in this repository.

    python benchmarks/bench_orchestration.py --repeats 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.orchestration.flows import prefect_server  # noqa: E402


def timed(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", default="report", help="stage module to run, e.g. report or 'train popularity'")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cmd = [sys.executable, "-m", f"stages.{args.stage.split()[0]}", *args.stage.split()[1:]]
    base = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "GENREC_ORCHESTRATOR")}
    base["GENREC_TRACKING"] = "0"
    bin_dir = str(Path(sys.executable).parent)
    base["PATH"] = bin_dir + os.pathsep + base.get("PATH", "")

    modes = {"none": {**base, "GENREC_ORCHESTRATOR": "none"}, "default, no server": dict(base),
             "prefect, temporary server": {**base, "GENREC_ORCHESTRATOR": "prefect"}}
    t = time.perf_counter()
    with prefect_server(base) as api:
        startup = time.perf_counter() - t
        modes["prefect, running server"] = {**base, "PREFECT_API_URL": api}
        times = {}
        for _ in range(args.repeats):  # interleaved, so load changes hit every mode alike
            for mode, env in modes.items():
                times.setdefault(mode, []).append(timed(cmd, env))
    plain = statistics.median(times["none"])
    print(f"stage `{args.stage}`, {args.repeats} runs per mode, median wall time (cores: {os.cpu_count()}):")
    for mode, ts in times.items():
        med = statistics.median(ts)
        extra = "" if mode == "none" else f"  overhead {med - plain:+.1f} s (x{med / plain:.2f})"
        print(f"  {mode:26s} {med:6.1f} s{extra}")
    print(f"  (`prefect server start` took {startup:.1f} s until healthy, once per session)")
    dvc = str(Path(sys.executable).with_name("dvc"))
    status = subprocess.run([dvc, "status", "--quiet"], cwd=REPO, env=base)
    if status.returncode != 0:  # something is stale: `dvc repro` would run stages, not measure a no-op
        print("no-op `dvc repro`: not measured, `dvc status` is not clean")
        return
    print(f"no-op `dvc repro`: {timed([dvc, 'repro'], base):.1f} s")


if __name__ == "__main__":
    main()
