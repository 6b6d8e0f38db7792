"""Where and how DECOR's token composition collapses (docs/decor_collapse.md): per-sample composition weights \
during training.

Trains params.yaml's DECOR block (methods.<name> or more_methods.<name>) with the shared trainer on this
workspace's data and, every ``--every`` training steps, records from the step's own batch, per level:

- the per-sample weights: mean and share > 0.99 of each sample's largest weight, mean normalised entropy;
- which code wins: distinct argmax codes over the batch, the most frequent one and its share;
- Table 3's "active" codes (weight >= 1/K) counted two ways: over the batch mean of the weights (the train
  stage's epoch statistic) and per sample (a code counts when it reaches 1/K for >= 1 % of the samples);
- the attention's scale: mean query norm, the winning code's key norm against the median key norm, the
  score gap between the best and second-best code (the block's scores: q.k / sqrt(d) or cos / temperature),
  and the value norms;
- how much the context differs across users: the mean pairwise cosine of the pooled contexts u and of the
  queries W_Q u over the batch (1 = every user asks the same question).

The tokenizer's own level usage is printed beside it (Table 3's first column). Writes one CSV row per
record; prints the rows as it goes.

    python scripts/decor_diagnosis.py --method decor --steps 1200 --every 50 --out decor_diagnosis.csv \
        [--set more_methods.decor.backbone.scores=cosine]
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.data.splits import load_splits  # noqa: E402
from pipeline.models.tiger.model import FIRST_CODE  # noqa: E402
from pipeline.training.method import build_method  # noqa: E402
from pipeline.training.trainer import Trainer  # noqa: E402


def level_stats(model, u: torch.Tensor, weights: torch.Tensor) -> dict[str, float]:
    """Statistics of one batch's composition weights (B, levels, K) and of the attention behind them."""
    B, levels, K = weights.shape
    out: dict[str, float] = {}
    with torch.no_grad():
        level_tokens = FIRST_CODE + torch.arange(levels * K, device=u.device).view(levels, K)
        keys_in = model.token_embeddings(level_tokens)  # (levels, K, d)
        q = model.compose_q(u).float()  # (B, d)
        k, v = model.compose_k(keys_in).float(), model.compose_v(keys_in).float()
        if model.config.scores == "cosine":  # the model's own scores (Decor._attend)
            unit_q, unit_k = torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(k, dim=-1)
            scores = torch.einsum("bd,lkd->blk", unit_q, unit_k) / model.config.temperature
        else:
            scores = torch.einsum("bd,lkd->blk", q, k) / math.sqrt(q.shape[-1])
    w = weights.float()
    # how much the context differs across the batch's users: mean pairwise cosine of u and of the query
    for name, x in (("context", u.float()), ("query", q)):
        unit = torch.nn.functional.normalize(x, dim=1)
        sim = unit @ unit.T
        out[f"{name}_cos_mean"] = float((sim.sum() - sim.diagonal().sum()) / max(B * (B - 1), 1))
    for level in range(levels):
        wl = w[:, level]
        top = wl.max(dim=1)
        winners = top.indices
        counts = torch.bincount(winners, minlength=K)
        entropy = -(wl * wl.clamp_min(1e-12).log()).sum(1) / math.log(K)
        mean_w = wl.mean(0)
        reach = (wl >= 1.0 / K).float().mean(0)  # per code: share of samples where it reaches 1/K
        sorted_scores = scores[:, level].sort(dim=1, descending=True).values
        key_norms = k[level].norm(dim=1)
        win = int(counts.argmax())
        p = f"l{level + 1}_"
        out.update({
            p + "max_mean": float(top.values.mean()),
            p + "onehot_share": float((top.values > 0.99).float().mean()),
            p + "entropy_mean": float(entropy.mean()),
            p + "distinct_winners": int((counts > 0).sum()),
            p + "top_winner": win,
            p + "top_winner_share": float(counts[win]) / B,
            p + "active_epoch_mean_rule": float((mean_w >= 1.0 / K).float().mean()),
            p + "active_per_sample_rule": float((reach >= 0.01).float().mean()),
            p + "query_norm": float(q.norm(dim=1).mean()),
            p + "winner_key_norm": float(key_norms[win]),
            p + "median_key_norm": float(key_norms.median()),
            p + "score_gap_top2": float((sorted_scores[:, 0] - sorted_scores[:, 1]).mean()),
            p + "score_std": float(scores[:, level].std(dim=1).mean()),
            p + "value_norm_winner": float(v[level, win].norm()),
            p + "value_norm_median": float(v[level].norm(dim=1).median()),
        })
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="decor")
    ap.add_argument("--steps", type=int, default=1200, help="training steps in all (epochs of --samples)")
    ap.add_argument("--samples", type=int, default=25_600, help="samples per epoch (a fresh random subset)")
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--out", type=Path, default=Path("decor_diagnosis.csv"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a params override, e.g. more_methods.decor.backbone.scores=cosine")
    args = ap.parse_args()
    import yaml

    from pipeline.config import params_from_dict, set_dotted

    raw = yaml.safe_load(Path("params.yaml").read_text())
    for assignment in args.set:
        set_dotted(raw, assignment)
    params = params_from_dict(raw)
    block = params.method(args.method)
    model, _ = build_method(params, args.method)
    if not getattr(model.config, "composition", False):
        sys.exit(f"methods.{args.method} has no composition to diagnose")
    splits = load_splits(Path("data/interim/sequences"))
    K = model.config.codebook_size
    for level in range(model.code_levels):
        used = torch.unique(model.item_codes[:, level]).numel()
        print(f"tokenizer: level {level + 1} uses {used}/{K} codes ({used / K:.1%}) across "
              f"{model.config.n_items} items")
    per_epoch = args.samples // block.train.batch_size
    epochs = max(1, math.ceil(args.steps / per_epoch))
    cfg = block.train.model_copy(update={"epochs": epochs, "samples_per_epoch": args.samples,
                                         "max_eval_samples": 300, "eval_every": epochs})
    rows: list[dict] = []
    state = {"step": 0}
    original = model.composition_weights

    def recording(u):
        composed, weights = original(u)
        if model.training:
            if state["step"] % args.every == 0:
                row = {"step": state["step"], **level_stats(model, u.detach(), weights.detach())}
                rows.append(row)
                print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                               if k in ("step", "context_cos_mean", "query_cos_mean")
                               or k.startswith(("l1_", "l2_", "l3_")) and any(
                                   s in k for s in ("max_mean", "onehot", "distinct", "top_winner_share",
                                                    "active", "gap", "winner_key", "median_key"))),
                      flush=True)
            state["step"] += 1
        return composed, weights

    model.composition_weights = recording
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model, splits["train"], splits["valid"], cfg, out, seed=params.method_seed(args.method),
                          device=block.device, log=print)
        trainer.fit()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out} ({len(rows)} records)")


if __name__ == "__main__":
    main()
