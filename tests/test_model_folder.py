"""A trained model folder stands alone: evaluate and recommend use the config and IDs stored with the model,
whatever happened upstream since; a folder trained on another catalogue is refused."""
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file

from pipeline import paths
from pipeline.config import ParamsError
from pipeline.evaluation.evaluate import evaluate_model
from pipeline.models.folder import load_model
from pipeline.recommend import main as recommend_main
from pipeline.recommend import recommend
from pipeline.tokenizers.semantic_ids import read_id_table
from pipeline.tokenizers.tokenize import semantic_ids, tokenize
from pipeline.training.method import train_method
from tests.conftest import N_ITEMS, TINY_T5, TINY_TRAIN


def quiet(*_):
    pass


def rqvae(**over) -> dict:
    return {"model": "rqvae", "hidden": [16], "code_dim": 8, "levels": 2, "codebook_size": 8, "epochs": 5,
            "batch_size": 64, **over}


def run_tokenizer(params, name: str) -> np.ndarray:
    """tokenize@<name> then semantic_ids@<name>, as the stages run them; returns the IDs."""
    block = params.tokenizer(name)
    tokenize(block, params.seed, paths.tokenizer_dir(name), paths.PLOTS_DIR / f"tokenize_{name}.csv", log=quiet)
    semantic_ids(block, paths.tokenizer_dir(name), paths.semantic_ids_dir(name), log=quiet)
    return read_id_table(paths.semantic_ids_dir(name) / "ids.parquet")


def tiger_params(workspace, tokenizer: dict):
    return workspace.params({"tiger": {"model": "tiger", "inputs": ["data/processed/semantic_ids/rq"],
                                       "backbone": TINY_T5, "train": TINY_TRAIN}}, {"rq": tokenizer})


@pytest.fixture
def trained_tiger(workspace) -> Path:
    """A tiny TIGER folder trained for one epoch on the workspace's random IDs."""
    workspace.write_ids("rq", workspace.random_ids(), codebook_size=8)
    params = workspace.params({"tiger": {"model": "tiger", "inputs": ["data/processed/semantic_ids/rq"],
                                         "backbone": TINY_T5, "train": {**TINY_TRAIN, "epochs": 1}}})
    train_method(params, "tiger", paths.model_dir("tiger"), log=quiet)
    return paths.model_dir("tiger")


def test_evaluate_and_recommend_use_the_ids_stored_with_the_model_after_the_tokenizer_reruns(workspace):
    workspace.write_embeddings()
    params = tiger_params(workspace, rqvae())
    trained_ids = run_tokenizer(params, "rq")
    model_dir = paths.model_dir("tiger")
    train_method(params, "tiger", model_dir, log=quiet)
    before = evaluate_model(model_dir, paths.results_dir("tiger"), params.evaluate, log=quiet)
    listed = recommend(model_dir, [3, 24, 11], k=5)
    assert [row["semantic_id"] for row in listed] == [trained_ids[int(row["item_id"][1:])].tolist() for row in listed]

    # The tokenizer re-runs with other settings: upstream IDs change (here even their length) ...
    params = tiger_params(workspace, rqvae(levels=3, codebook_size=4, code_dim=4, epochs=3))
    new_ids = run_tokenizer(params, "rq")
    assert new_ids.shape != trained_ids.shape
    # ... and the trained model still ranks with the IDs it was trained with.
    assert np.array_equal(read_id_table(model_dir / "semantic_ids.parquet"), trained_ids)
    model, info = load_model(model_dir)
    assert np.array_equal(model.item_codes.numpy(), trained_ids) and info["config"]["depth"] == trained_ids.shape[1]
    after = evaluate_model(model_dir, paths.results_dir("tiger"), params.evaluate, log=quiet)
    assert after == before
    assert recommend(model_dir, [3, 24, 11], k=5) == listed


def test_the_folder_holds_the_class_config_and_ids_and_no_per_run_value(workspace):
    ids = workspace.random_ids()
    workspace.write_ids("rq", ids, 8)
    params = tiger_params(workspace, {"model": "rqvae"})
    first, second = workspace.root / "a", workspace.root / "b"
    train_method(params, "tiger", first, log=quiet)
    train_method(params, "tiger", second, log=quiet)
    info = json.loads((first / "model.json").read_text())
    assert info["model"] == "tiger" and info["method"] == "tiger"
    assert {**TINY_T5, "n_items": N_ITEMS, "depth": 3, "codebook_size": 8,
            "max_history": 20}.items() <= info["config"].items()
    assert info["catalogue"]["items"] == N_ITEMS
    assert np.array_equal(read_id_table(first / "semantic_ids.parquet"), ids)
    assert not (first / "run.json").exists()
    for name in ("model.json", "semantic_ids.parquet", "training.json"):  # same inputs, same bytes
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_a_folder_trained_on_another_catalogue_is_refused(workspace):
    workspace.write_ids("rq", workspace.random_ids(), 8)
    params = tiger_params(workspace, {"model": "rqvae"})
    train_method(params, "tiger", paths.model_dir("tiger"), log=quiet)
    items = pq.read_table(paths.ITEMS).to_pydict()
    items["raw_item_id"][5] = "someone-else"
    pq.write_table(pa.table(items), paths.ITEMS)
    with pytest.raises(ParamsError, match=r"data/models/tiger: trained on a catalogue of 40 items, .* with other ids"):
        evaluate_model(paths.model_dir("tiger"), paths.results_dir("tiger"), params.evaluate, log=quiet)
    pq.write_table(pa.table({k: v[:-1] for k, v in items.items()}), paths.ITEMS)
    with pytest.raises(ParamsError, match="holds 39 items"):
        evaluate_model(paths.model_dir("tiger"), paths.results_dir("tiger"), params.evaluate, log=quiet)


def test_sasrec_writes_its_item_embeddings_from_the_selected_weights(workspace):
    params = workspace.params({"sasrec": {"model": "sasrec", "inputs": ["data/interim/sequences"],
                                          "backbone": {"hidden": 16, "n_blocks": 1, "n_heads": 1},
                                          "train": {**TINY_TRAIN, "epochs": 2}}})
    train_method(params, "sasrec", paths.model_dir("sasrec"), log=quiet)
    table = load_file(str(paths.model_dir("sasrec") / "item_embeddings.safetensors"))["item_embeddings"]
    model, _ = load_model(paths.model_dir("sasrec"))
    assert table.shape == (N_ITEMS, 16)
    assert np.array_equal(table.numpy(), model.item_embeddings().numpy())  # row i = item i


def test_recommend_prints_titles_and_semantic_ids_and_refuses_unknown_users(workspace, capsys):
    ids = workspace.random_ids()
    workspace.write_ids("rq", ids, 8)
    params = tiger_params(workspace, {"model": "rqvae"})
    train_method(params, "tiger", paths.model_dir("tiger"), log=quiet)
    assert recommend_main(["--model", "data/models/tiger", "--user", "u3", "--k", "4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("data/models/tiger: top 4 after 8 item(s)")
    assert len(out) == 5 and all("Item number" in line and "[" in line for line in out[1:])
    first = out[1].split()[1]
    assert str(ids[int(first[1:])].tolist()) in out[1]
    assert recommend_main(["--model", "data/models/tiger", "--history", "i1, i8", "--k", "3"]) == 0
    assert "top 3 after 2 item(s) (last: i1, i8)" in capsys.readouterr().out
    assert recommend_main(["--model", "data/models/tiger", "--user", "nobody"]) == 2
    assert "user 'nobody' is not in" in capsys.readouterr().err
    assert recommend_main(["--model", "data/models/tiger", "--history", "i1,zzz"]) == 2
    assert "['zzz'] are not in the items table" in capsys.readouterr().err
    assert recommend_main(["--model", "data/models/none", "--user", "u3"]) == 2
    assert "is not a trained model folder" in capsys.readouterr().err


def test_a_method_that_names_ids_it_does_not_read_or_reads_none_is_refused(workspace):
    from pipeline.training.method import build_method

    workspace.write_ids("rq", workspace.random_ids(), 8)
    params = workspace.params({"sasrec": {"model": "sasrec", "inputs": ["data/processed/semantic_ids/rq"]},
                               "tiger": {"model": "tiger", "inputs": ["data/interim/sequences"]}})
    with pytest.raises(ParamsError, match=r"methods.sasrec.inputs: sasrec reads no semantic IDs; remove"):
        build_method(params, "sasrec")
    with pytest.raises(ParamsError, match=r"methods.tiger.inputs: tiger reads semantic IDs: name one tokenizer's IDs"):
        build_method(params, "tiger")


@pytest.mark.parametrize("damage, message", [
    ("cut weights", r"best.safetensors: not a complete safetensors file .*dvc checkout .*dvc repro -f train@tiger"),
    ("half-written model.json", r"model.json: not valid JSON .*dvc checkout"),
    ("model.json of another shape", r"model.json: no \['catalogue'\]"),
    ("weights of another size", r"best.safetensors: its tensors do not fit the model"),
])
def test_a_damaged_model_folder_is_refused_naming_the_file_and_the_repair(trained_tiger, damage, message):
    """What `python -m pipeline.recommend` and `evaluate@` meet when a model folder's file is cut short or wrong:
    a message naming the file, what is wrong, and how to repair it (exit status 2, no traceback)."""
    folder = trained_tiger
    weights, info = folder / "best.safetensors", folder / "model.json"
    if damage == "cut weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "half-written model.json":
        info.write_text(info.read_text()[:40])
    elif damage == "model.json of another shape":
        text = json.loads(info.read_text())
        del text["catalogue"]
        info.write_text(json.dumps(text))
    else:
        text = json.loads(info.read_text())
        text["config"]["d_ff"] *= 2
        info.write_text(json.dumps(text))
    with pytest.raises(ParamsError, match=message):
        load_model(folder, "cpu")
    assert recommend_main(["--model", str(folder), "--history", "i1,i2"]) == 2
