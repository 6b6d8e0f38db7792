"""The contract every registry entry keeps, checked for each one on tiny data, so that a new entry is covered the
moment its registry line is written: models (pipeline.models.registry) build from a params block, give a finite
loss that backpropagates, rank item ids of the right shape and range, and come back from their model folder
ranking the same; tokenizer kinds (pipeline.tokenizers.registry) train and derive one distinct ID per item."""
import numpy as np
import pytest
import torch

from pipeline import paths
from pipeline.data.splits import load_splits
from pipeline.models.base import INVALID, READS_SEMANTIC_IDS, READS_TOKENIZER
from pipeline.models.folder import WEIGHTS_FILE, load_model, save_weights, write_folder
from pipeline.models.registry import MODELS, model_class
from pipeline.training.method import build_method
from tests.conftest import N_ITEMS, TINY_T5
from tests.test_model_folder import rqvae, run_tokenizer

IDS, TOKENIZER = "data/processed/semantic_ids/rq", "data/processed/tokenizers/rq"
TINY_SETTINGS = {**TINY_T5, "hidden": 16, "n_blocks": 1, "n_heads": 2, "branch_ff": 32, "bos_queries": 4}


def block_for(name: str) -> dict:
    """A params block for registry model ``name``: the inputs its class reads, the tiny sizes it knows."""
    cls = model_class(name, "contract")
    inputs = ([IDS, TOKENIZER] if READS_TOKENIZER in cls.reads else [IDS] if READS_SEMANTIC_IDS in cls.reads
              else ["data/interim/sequences"])
    backbone = {k: v for k, v in TINY_SETTINGS.items() if k in cls.config_class.model_fields}
    return {"model": name, "inputs": inputs, "backbone": backbone}


@pytest.fixture
def upstream(workspace):
    """Text vectors and a trained tiny RQ-VAE with its IDs, as the tokenize and semantic_ids stages leave them."""
    workspace.write_embeddings()
    params = workspace.params({name: block_for(name) for name in MODELS}, {"rq": rqvae(levels=2, epochs=3)})
    run_tokenizer(params, "rq")
    return params


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_keeps_the_model_contract(upstream, name):
    torch.manual_seed(0)
    model, data = build_method(upstream, name)
    cls = type(model)
    assert set(cls.sizes(data, 20)) == set(cls.data_settings), "sizes() must give exactly the data_settings"
    splits = load_splits(paths.SEQUENCES_DIR)
    idx = np.arange(8)
    batch = model.make_batch(splits["train"], idx, torch.device("cpu"))
    if cls.fits_itself:
        model.fit(splits["train"])
    else:
        model.train()
        loss = model.loss(batch)
        assert loss.ndim == 0 and torch.isfinite(loss), loss
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    model.eval()
    test = model.make_batch(splits["test"], idx, torch.device("cpu"))
    ranked = model.rank(test, 5)
    assert ranked.shape == (8, 5) and not torch.is_floating_point(ranked)
    assert ((ranked == INVALID) | ((ranked >= 0) & (ranked < N_ITEMS))).all()
    # the project's own model-folder writer and reader: the folder alone ranks the same
    folder = paths.model_dir(name)
    write_folder(folder, name, model, data, upstream.method(name).inputs, paths.ITEMS)
    save_weights(model, folder / WEIGHTS_FILE)
    loaded, info = load_model(folder, "cpu", items_path=paths.ITEMS)
    assert info["model"] == name and type(loaded) is cls
    assert torch.equal(loaded.rank(loaded.make_batch(splits["test"], idx, torch.device("cpu")), 5), ranked)


def tiny_tokenizer_block(kind: str, workspace) -> dict:
    """A tokenizers.<name> block of registry kind ``kind`` on the workspace's tiny catalogue. A kind without an
    entry here fails the contract test below, naming itself: a new kind adds its tiny block."""
    import json

    from safetensors.torch import save_file

    workspace.write_embeddings()
    small = {"hidden": [16], "code_dim": 8, "levels": 2, "codebook_size": 8, "epochs": 3, "batch_size": 64}
    if kind == "rqvae":
        return {"model": "rqvae", **small}
    if kind == "letter":
        save_file({"item_embeddings": torch.randn(N_ITEMS, 5, generator=torch.Generator().manual_seed(0))},
                  "cf.safetensors")
        return {"model": "letter", "inputs": [str(paths.EMBEDDINGS), "cf.safetensors"], **small}
    if kind == "external":
        codes = {f"i{i}": [i % 7, i // 7] for i in range(N_ITEMS)}
        with open("codes.json", "w") as f:
            json.dump(codes, f)
        return {"model": "external", "inputs": ["codes.json", str(paths.ITEMS)]}
    raise AssertionError(f"tokenizer kind {kind!r} has no tiny block in tests/test_registry_contract.py")


@pytest.mark.parametrize("kind", sorted(__import__("pipeline.tokenizers.registry", fromlist=["KINDS"]).KINDS))
def test_every_registered_tokenizer_kind_trains_and_gives_one_distinct_id_per_item(workspace, kind):
    from pipeline.tokenizers.semantic_ids import assert_unique, read_id_table

    params = workspace.params({}, {"tok": tiny_tokenizer_block(kind, workspace)})
    ids = run_tokenizer(params, "tok")
    assert ids.shape[0] == N_ITEMS and ids.ndim == 2 and ids.shape[1] >= 2
    assert_unique(ids)
    assert np.array_equal(read_id_table(paths.semantic_ids_dir("tok") / "ids.parquet", N_ITEMS), ids)
