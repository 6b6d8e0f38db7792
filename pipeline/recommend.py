"""Top-K recommendations from a trained model folder and the items table, nothing else.

    python -m pipeline.recommend --model data/models/tiger --user 196
    python -m pipeline.recommend --model data/models/tiger --history 50,172,133 --k 5

``--user`` takes a raw user id of the data (the next item after the user's whole sequence: the items of
the test split's history and its target); ``--history`` takes raw item ids, oldest first. The model is
built from its folder alone (``pipeline.models.folder``): its stored config, weights and semantic IDs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipeline import paths
from pipeline.config import ParamsError
from pipeline.data.splits import Split
from pipeline.models.folder import load_model
from pipeline.runtime.devices import resolve_device


class RecommendError(ValueError):
    """A user or item the data does not know, or a history that cannot be ranked."""


def user_history(raw_user: str, data_dir: Path) -> list[int]:
    users = pq.read_table(data_dir / "users.parquet").to_pydict()
    dense = dict(zip(users["raw_user_id"], users["user_id"]))
    if raw_user not in dense:
        raise RecommendError(f"user {raw_user!r} is not in {data_dir / 'users.parquet'} "
                             f"({len(dense):,} users, e.g. {', '.join(users['raw_user_id'][:3])})")
    test = pq.read_table(data_dir / "test.parquet").to_pydict()
    row = test["user_id"].index(dense[raw_user])
    return list(test["history"][row]) + [test["target"][row]]


def item_history(raw_items: list[str], items: dict) -> list[int]:
    dense = dict(zip(items["raw_item_id"], items["item_id"]))
    unknown = [i for i in raw_items if i not in dense]
    if unknown:
        raise RecommendError(f"item(s) {unknown} are not in the items table ({len(dense):,} items, "
                             f"e.g. {', '.join(items['raw_item_id'][:3])})")
    return [dense[i] for i in raw_items]


def rank_history(model, history: list[int], k: int, device) -> list[int]:
    """The top-``k`` dense item ids after ``history`` (dense ids, oldest first), best first; the model keeps the
    most recent items it reads (its ``max_history``). The one ranking path of this module and the MLflow model."""
    import torch

    if not history:
        raise RecommendError("the history is empty: give at least one item")
    max_history = getattr(model.config, "max_history", None) or getattr(model.config, "max_len", len(history))
    history = history[-max_history:]
    one = Split(users=np.zeros(1, np.int64), offsets=np.array([0, len(history)]), values=np.array(history),
                targets=np.zeros(1, np.int64))  # no target: only the ranking is read
    with torch.no_grad():
        ranked = model.rank(model.make_batch(one, np.arange(1), device), k)[0].cpu().numpy()
    return [int(i) for i in ranked if i >= 0]


def recommend(model_dir: Path, history: list[int], k: int, device: str = "auto",
              data_dir: Path = paths.SEQUENCES_DIR) -> list[dict]:
    """The top-``k`` items for one history (dense item ids, oldest first), best first."""
    dev = resolve_device(device)
    model, _ = load_model(model_dir, dev, items_path=data_dir / "items.parquet")
    ranked = rank_history(model, history, k, dev)
    items = pq.read_table(data_dir / "items.parquet").sort_by("item_id").to_pydict()
    codes = model.item_codes.cpu().numpy() if hasattr(model, "item_codes") else None
    titles = items.get("title") or [""] * len(items["item_id"])
    return [{"rank": r + 1, "item_id": items["raw_item_id"][i], "title": titles[i],
             **({"semantic_id": codes[i].tolist()} if codes is not None else {})}
            for r, i in enumerate(ranked)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.recommend", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, type=Path, help="a trained model folder, e.g. data/models/tiger")
    who = ap.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="raw user id of the data")
    who.add_argument("--history", help="raw item ids, oldest first, separated by commas")
    ap.add_argument("--k", type=int, default=10, help="list length (default 10)")
    ap.add_argument("--data", type=Path, default=paths.SEQUENCES_DIR,
                    help=f"the filter stage's folder ({paths.SEQUENCES_DIR})")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    try:
        if args.k < 1:
            raise RecommendError(f"--k must be at least 1, got {args.k}")
        for name in ("items.parquet", "users.parquet", "test.parquet"):
            if not (args.data / name).exists():
                raise RecommendError(f"{args.data / name}: not found; run the filter stage (dvc repro filter)")
        items = pq.read_table(args.data / "items.parquet").sort_by("item_id").to_pydict()
        history = (user_history(args.user, args.data) if args.user is not None
                   else item_history([h.strip() for h in args.history.split(",") if h.strip()], items))
        rows = recommend(args.model, history, args.k, args.device, args.data)
    except (RecommendError, ParamsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shown = [items["raw_item_id"][i] for i in history[-5:]]
    print(f"{args.model}: top {len(rows)} after {len(history)} item(s) (last: {', '.join(shown)})")
    for row in rows:
        sid = f"  {row['semantic_id']}" if "semantic_id" in row else ""
        print(f"{row['rank']:>3}. {row['item_id']:<12} {row['title']}{sid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
