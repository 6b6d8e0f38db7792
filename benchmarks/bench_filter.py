"""Benchmark of the `filter` stage on synthetic Amazon-2023-shaped data.

Writes an official-5-core-style CSV (user_id,parent_asin,rating,timestamp) with N interactions
(Amazon-like ids, Zipf item popularity, ~10 items per user, many timestamp ties), then runs the whole
filter logic (parse, dedup, iterative k-core, dense ids, leave-one-out, Parquet writes) in a fresh
process and prints its wall time and peak resident memory. Target: <= 30 s and <= 3 GB for
10 M interactions on a 2-core machine.

    python benchmarks/bench_filter.py --interactions 10_000_000
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl


def synthesize(n: int, path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    n_users = n // 10
    n_items = max(n // 20, 1000)
    users = rng.integers(0, n_users, n)
    items = (rng.zipf(1.3, n) - 1) % n_items
    # ids shaped like Amazon 2023's (28-character user ids, 10-character ASINs);
    # coarse timestamps (ms, rounded to the day) so that ties are common, as in Amazon data
    ts = 1_500_000_000_000 + rng.integers(0, 2000, n) * 86_400_000
    df = pl.DataFrame({"u": users, "i": items, "timestamp": ts, "rating": rng.integers(1, 6, n).astype(np.float64)})
    df = df.with_columns(
        user_id=pl.lit("AE") + pl.col("u").cast(pl.String).str.zfill(26),
        parent_asin=pl.lit("B0") + pl.col("i").cast(pl.String).str.zfill(8),
    ).select("user_id", "parent_asin", "rating", "timestamp")
    df.write_csv(path)


CHILD = """
import json, sys, time, resource
from pipeline.config import params_from_dict
from pipeline.data.prepare import prepare
raw, out = sys.argv[1], sys.argv[2]
p = params_from_dict({"data": {"source": "amazon2023"}})
t = time.perf_counter()
stats = prepare(p, raw, out, log=lambda *a: print(*a, file=sys.stderr))
print(json.dumps({"seconds": time.perf_counter() - t,
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, **stats}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--interactions", type=lambda s: int(s.replace("_", "")), default=10_000_000)
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where to write the synthetic data (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        t = time.perf_counter()
        synthesize(args.interactions, raw / "Synthetic.csv")
        (raw / "manifest.json").write_text(json.dumps({"source": "amazon2023",
                                                       "files": {"Synthetic.csv": {}}}))
        print(f"synthesised {args.interactions:,} interactions in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        proc = subprocess.run([sys.executable, "-c", CHILD, str(raw), str(Path(tmp) / "out")],
                              capture_output=True, text=True, check=False)
        sys.stderr.write(proc.stderr)
        if proc.returncode:
            sys.exit(proc.returncode)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"filter on {args.interactions:,} interactions: {r['seconds']:.1f} s (target 30 s, ratio "
          f"{r['seconds'] / 30:.2f}), peak RSS {r['peak_rss_gb']:.2f} GB "
          f"(target 3 GB, ratio {r['peak_rss_gb'] / 3:.2f})")
    print(f"  after 5-core: {r['users']:,} users, {r['items']:,} items, {r['interactions']:,} interactions, "
          f"{r['train_samples']:,} training samples")


if __name__ == "__main__":
    main()
