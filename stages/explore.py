"""DVC stage `explore`: the semantic-ID explorer (``pipeline.analysis.explorer``), static HTML in `reports/explorer/`.

One page per tokenizer of params.yaml's ``tokenizers`` (its IDs in ``data/processed/semantic_ids``), one per model
folder named with ``--learned`` whose IDs differ from its tokenizer's (ETEGRec learns its own), one per DECOR model
folder named with ``--composition`` (its composition weights over the test users), and ``index.html``; ``--neighbours``
names SASRec's item-embedding export, for the agreement with collaborative neighbours. dvc.yaml names the same files as
the stage's deps, so training another method does not re-run it. Open `reports/explorer/index.html` in a browser.

    python -m stages.explore --learned data/models/etegrec --composition data/models/decor \
        --neighbours data/models/sasrec/item_embeddings.safetensors
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipeline import paths
from pipeline.analysis import explorer
from pipeline.config import ParamsError, load_params
from pipeline.io import atomic_dir
from pipeline.models.folder import IDS_FILE, read_info
from pipeline.orchestration import tracking
from pipeline.orchestration.flows import as_flow, run_stage
from pipeline.runtime.reproducible import pin_threads, portable_cpu_numerics
from pipeline.tokenizers.item_vectors import load_embeddings
from pipeline.tokenizers.semantic_ids import read_id_table

EXPLORER_DIR = Path("reports/explorer")


def id_tables(n_items: int, tokenizers: list[str], learned: list[Path]) -> list[explorer.IdTable]:
    tables = {}
    for name in tokenizers:
        folder = paths.semantic_ids_dir(name)
        if not (folder / "ids.parquet").exists():
            raise ParamsError(f"{folder / 'ids.parquet'}: not found; run dvc repro semantic_ids@{name} first")
        meta = json.loads((folder / "meta.json").read_text())
        tables[name] = explorer.IdTable(name, read_id_table(folder / "ids.parquet", n_items), meta["codebook_size"],
                                        f"Tokenizer {name} (semantic_ids@{name})")
    for folder in learned:
        info = read_info(folder)
        tokenizer = paths.tokenizer_of((info.get("inputs") or [""])[0])
        if not (folder / IDS_FILE).exists() or tokenizer not in tables:
            raise ParamsError(f"{folder}: holds no semantic IDs of a tokenizer ({IDS_FILE}); --learned names models "
                              "that learn their own IDs, such as ETEGRec's")
        ids = read_id_table(folder / IDS_FILE, n_items)
        if np.array_equal(ids, tables[tokenizer].ids):
            continue  # training left the tokenizer's IDs as they were: nothing new to show
        name = folder.name if folder.name not in tables else f"{folder.name}-learned"
        tables[name] = explorer.IdTable(name, ids, info["config"]["codebook_size"],
                                        f"Learned by {folder.name} ({info['model']}) during training, starting from "
                                        f"{tokenizer}'s IDs", compared_to=[tokenizer])
    return list(tables.values())


def composition_weights(folder: Path, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(users, levels, K) DECOR's composition weights for every test user, and the user ids."""
    import torch

    from pipeline.data.splits import load_split
    from pipeline.models.folder import load_model

    model, _ = load_model(folder, "cpu", items_path=paths.ITEMS)
    test = load_split(paths.TEST_SPLIT)
    out = []
    with torch.no_grad():
        for idx in test.batches(batch_size):
            batch, _ = model.encode(model.make_batch(test, idx, torch.device("cpu")))
            out.append(model.composition_weights(batch["context"])[1].float().numpy())
    return np.concatenate(out), test.users


def explore(out_dir: Path = EXPLORER_DIR, tokenizers: list[str] = (), learned: list[Path] = (),
            composition: list[Path] = (), neighbours_from: Path | None = None, log=print) -> list[dict]:
    items = pq.read_table(paths.ITEMS).sort_by("item_id").to_pydict()
    titles = [t or raw for t, raw in zip(items.get("title") or items["raw_item_id"], items["raw_item_id"])]
    tables = id_tables(len(titles), list(tokenizers), list(learned))
    neighbours = explorer.sasrec_neighbours(load_embeddings(neighbours_from)) if neighbours_from else None
    decor = []
    for folder in composition:
        info = read_info(folder)
        if info["model"] != "decor" or not info["config"].get("composition"):
            raise ParamsError(f"{folder}: a {info['model']} model without DECOR's composition; --composition names "
                              "DECOR model folders")
        decor.append((folder, info))
    pages = [t.name for t in tables] + [f.name if f.name not in {t.name for t in tables} else f"{f.name}-composition"
                                        for f, _ in decor]
    summaries = []
    with atomic_dir(out_dir) as tmp:
        others = {t.name: t for t in tables}
        for table in tables:
            data = explorer.page_data(table, titles, neighbours, {n: t for n, t in others.items() if n != table.name})
            (tmp / f"{table.name}.html").write_text(explorer.render_page(data, pages))
            s = data["stats"]
            nb = data.get("neighbours", {}).get("levels", [{}])[0]
            summaries.append({"name": table.name, "kind": table.source,
                              "summary": f"{table.levels} × {table.codebook_size}; "
                              f"collision rate {s['collision_rate']:.1%}; "
                              + ", ".join(f"level {lv + 1} uses {s[f'utilisation_l{lv + 1}']:.0%}"
                                          for lv in range(table.levels))
                              + (f"; SASRec neighbours share the first code {nb['share']:.1%} "
                                 f"(chance {nb['chance']:.1%})"
                                 if nb else "")})
            log(f"[explore] {table.name}: {len(table.ids):,} items, collision rate {s['collision_rate']:.3f}")
        for (folder, info), page in zip(decor, pages[len(tables):]):
            weights, users = composition_weights(folder)
            tokenizer = paths.tokenizer_of((info.get("inputs") or [""])[0]) or ""
            (tmp / f"{page}.html").write_text(explorer.render_composition(page, weights, users, tokenizer, pages))
            summaries.append({"name": page, "kind": f"DECOR composition of {folder.name}",
                              "summary": f"{weights.shape[0]:,} test users, {weights.shape[1]} levels"})
            log(f"[explore] {page}: composition weights of {weights.shape[0]:,} test users")
        (tmp / "index.html").write_text(explorer.render_index(summaries, pages))
    return summaries


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m stages.explore", description=__doc__.split("\n")[0])
    ap.add_argument("--learned", type=Path, nargs="*", default=[], help="model folders that learn their own IDs")
    ap.add_argument("--composition", type=Path, nargs="*", default=[], help="DECOR model folders")
    ap.add_argument("--neighbours", type=Path, default=None, help="SASRec's item_embeddings.safetensors")
    args = ap.parse_args(argv)
    portable_cpu_numerics()  # before any tensor work: the same bytes on every x86-64 CPU
    params = load_params()
    pin_threads(params.cpu_threads)
    with tracking.stage_run("explore", params.data.dataset_name, {"cpu_threads": params.cpu_threads}) as run:
        summaries = as_flow(explore, name="explore")(EXPLORER_DIR, list(params.tokenizers), args.learned,
                                                     args.composition, args.neighbours)
        run.log_artifacts(str(EXPLORER_DIR), artifact_path="explorer")
        run.set_tags({"explorer.pages": ", ".join(s["name"] for s in summaries)})


if __name__ == "__main__":
    run_stage("explore", lambda: main(sys.argv[1:]))
