"""A tiny pipeline workspace: the folders of pipeline/paths.py filled with a real-shaped dataset, so that
stage code (training, tokenizers, model folders, evaluate, recommend) runs as under `dvc repro`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from safetensors.torch import save_file

from pipeline import paths
from pipeline.config import params_from_dict
from pipeline.tokenizers.semantic_ids import write_id_table

N_ITEMS, N_USERS, SEQ_LEN = 40, 40, 8  # N_ITEMS as tests/test_tiger.py


def pattern_sequences() -> list[list[int]]:
    """Each user walks item -> (7 * item + 3) % N: the next item is a function of the last one."""
    seqs = []
    for u in range(N_USERS):
        seq = [(u * 5) % N_ITEMS]
        for _ in range(SEQ_LEN - 1):
            seq.append((7 * seq[-1] + 3) % N_ITEMS)
        seqs.append(seq)
    return seqs


def _split_table(rows) -> pa.Table:
    return pa.table({"user_id": pa.array([r[0] for r in rows], pa.int32()),
                     "history": pa.array([r[1] for r in rows], pa.large_list(pa.int32())),
                     "target": pa.array([r[2] for r in rows], pa.int32())})


class Workspace:
    root: Path

    def write_sequences(self) -> None:
        """Leave-one-out splits as the filter stage writes them (docs/method_reference.md §1)."""
        seqs = pattern_sequences()
        d = paths.SEQUENCES_DIR
        d.mkdir(parents=True, exist_ok=True)
        train = [(u, s[max(0, t - 20):t], s[t]) for u, s in enumerate(seqs) for t in range(1, len(s) - 2)]
        valid = [(u, s[-22:-2], s[-2]) for u, s in enumerate(seqs)]
        test = [(u, s[-21:-1], s[-1]) for u, s in enumerate(seqs)]
        for name, rows in (("train", train), ("valid", valid), ("test", test)):
            pq.write_table(_split_table(rows), d / f"{name}.parquet")
        pq.write_table(pa.table({"item_id": pa.array(range(N_ITEMS), pa.int32()),
                                 "raw_item_id": [f"i{i}" for i in range(N_ITEMS)],
                                 "title": [f"Item number {i}" for i in range(N_ITEMS)]}), paths.ITEMS)
        pq.write_table(pa.table({"user_id": pa.array(range(N_USERS), pa.int32()),
                                 "raw_user_id": [f"u{u}" for u in range(N_USERS)]}), d / "users.parquet")

    def write_embeddings(self, dim: int = 16, seed: int = 0) -> None:
        paths.EMBEDDINGS_DIR.mkdir(parents=True, exist_ok=True)
        z = np.random.default_rng(seed).normal(size=(N_ITEMS, dim)).astype(np.float32)
        np.save(paths.EMBEDDINGS, z / np.linalg.norm(z, axis=1, keepdims=True))

    def write_ids(self, name: str, codes: np.ndarray, codebook_size: int, code_dim: int = 8) -> Path:
        """A semantic_ids@<name> folder with the given (N, L+1) IDs and random codebooks."""
        d = paths.semantic_ids_dir(name)
        d.mkdir(parents=True, exist_ok=True)
        write_id_table(codes, d / "ids.parquet")
        levels = codes.shape[1] - 1
        (d / "meta.json").write_text(json.dumps({"codebook_size": codebook_size, "levels": levels,
                                                 "depth": levels + 1}))
        books = torch.randn(levels, codebook_size, code_dim, generator=torch.Generator().manual_seed(0))
        save_file({"codebooks": books}, str(d / "codebooks.safetensors"))
        return d

    def random_ids(self, codebook_size: int = 8, seed: int = 0) -> np.ndarray:
        """Unique (N, 3) IDs: two levels of ``codebook_size`` codes (a shuffled grid) and the collision token 0."""
        grid = np.random.default_rng(seed).permutation(codebook_size * codebook_size)[:N_ITEMS]
        return np.stack([grid // codebook_size, grid % codebook_size, np.zeros_like(grid)], axis=1)

    def params(self, methods: dict, tokenizers: dict | None = None, **sections):
        raw = {"methods": methods, "tokenizers": tokenizers or {"rq": {"model": "rqvae"}}, **sections}
        (self.root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        return params_from_dict(raw)


TINY_T5 = {"d_model": 32, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2, "d_kv": 16, "d_ff": 64,
           "dropout": 0.0}
TINY_TRAIN = {"epochs": 3, "batch_size": 32, "lr": 0.01, "weight_decay": 0.0, "warmup_steps": 2, "beam_size": 10,
              "eval_batch_size": 64}


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Workspace:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENREC_TRACKING", "0")
    monkeypatch.setenv("GENREC_ORCHESTRATOR", "none")
    ws = Workspace()
    ws.root = tmp_path
    ws.write_sequences()
    return ws
