"""A trained model's folder, which stands alone (as nanoGPT's checkpoint does for ``sample.py``).

``train@<method>`` writes, beside the weights:

- ``model.json``: the registry name of the model class, its resolved config (every hyperparameter and
  size), the inputs it was built from, and the item catalogue it was trained on;
- ``semantic_ids.parquet`` and ``codebooks.safetensors``, for models that read them: the item -> ID table
  and the tokenizer's codebooks the model was trained with;
- ``best.safetensors`` (the selected weights) and ``training.json`` (epochs run, best epoch).

``evaluate`` and ``recommend`` rebuild the model from this folder alone: never from params.yaml or the
upstream folders, so re-running a tokenizer cannot silently change what a trained model means. No
per-run value (MLflow run id, timing) goes in: the same inputs give the same bytes.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from safetensors.torch import load_model as load_safetensors_into

from pipeline.io import atomic_path, write_json
from pipeline.models.base import READS_CODEBOOKS, READS_SEMANTIC_IDS, ModelInputs, Recommender
from pipeline.models.registry import MethodError, model_class, name_of
from pipeline.paths import tokenizer_of
from pipeline.tokenizers.semantic_ids import SemanticIdError, read_id_table, write_id_table

MODEL_CONFIG_FILE = "model.json"
WEIGHTS_FILE = "best.safetensors"
IDS_FILE = "semantic_ids.parquet"
CODEBOOKS_FILE = "codebooks.safetensors"
TRAINING_FILE = "training.json"
FORMAT = 1


# ----- weights ---------------------------------------------------------------------------------------
TIED_KEY = "tied"  # the one metadata entry: {dropped name: kept name} of tensors that share storage


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """The model's tensors, each shared storage once (T5 ties its embedding and LM head), in the same bytes
    for the same weights. safetensors' own save_model records the dropped names as one metadata entry each,
    and the writer orders metadata entries at random per process: the same weights gave other bytes, so
    DVC saw every training as a change. One entry holding a sorted JSON map has a single order."""
    tensors, kept, tied = {}, {}, {}
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key in kept:
            tied[name] = kept[key]
        else:
            kept[key] = name
            tensors[name] = tensor.detach().cpu().contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={TIED_KEY: json.dumps(tied, sort_keys=True)} if tied else None)


class DamagedFileError(MethodError):
    """A file of a model folder that exists but cannot be read: cut short, half written, or of another model."""


def damaged(path: Path, what: str) -> DamagedFileError:
    """The message for a file that cannot be read: which file, what is wrong, and the two ways to repair it."""
    folder = path.parent.parent if path.parent.name == "last" else path.parent
    return DamagedFileError(f"{path}: {what}. The file is damaged (cut short by a full disk or a killed copy, or "
                            f"edited by hand): restore the recorded one with `dvc checkout {folder}`, or re-train "
                            f"it with `dvc repro -f train@{folder.name}`")


def load_weights(model: torch.nn.Module, path: Path) -> None:
    device = next(model.parameters(), torch.zeros(0)).device
    try:
        tensors = load_file(str(path), device=str(device))
        with safe_open(str(path), "pt") as f:
            tied = json.loads((f.metadata() or {}).get(TIED_KEY, "{}"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise damaged(path, f"not a complete safetensors file ({str(exc).splitlines()[0][:120]})") from None
    try:
        if not tied and set(model.state_dict()) - set(tensors):  # a file of safetensors' save_model
            load_safetensors_into(model, str(path), strict=True, device=str(device))
            return
        model.load_state_dict({**tensors, **{name: tensors[kept] for name, kept in tied.items()}}, strict=True)
    except (RuntimeError, KeyError) as exc:  # missing, unexpected or mis-shaped tensors
        raise damaged(path, f"its tensors do not fit the model its folder describes "
                            f"({str(exc).splitlines()[0][:160]})") from None


def read_json(path: Path) -> dict:
    """A JSON file of a model or results folder; a cut-short or garbled one is a clear error naming it."""
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise damaged(path, f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise damaged(path, f"expected a JSON object, found {type(value).__name__}")
    return value


# ----- semantic IDs and codebooks --------------------------------------------------------------------
def _codes(path: Path, n_items: int) -> torch.Tensor:
    if not path.exists():
        raise MethodError(f"{path}: not found")
    try:
        return torch.as_tensor(read_id_table(path, n_items))
    except SemanticIdError as exc:
        raise MethodError(str(exc)) from None


def read_codebooks(path: Path) -> torch.Tensor:
    if not path.exists():
        raise MethodError(f"{path}: not found; this model reads a tokenizer's codebooks (DECOR's fusion), and "
                          "only an RQ-VAE or LETTER tokenizer has them (an external one brings IDs only)")
    try:
        return load_file(str(path))["codebooks"]
    except (SafetensorError, OSError, KeyError) as exc:
        raise damaged(path, f"no readable 'codebooks' tensor ({str(exc).splitlines()[0][:120]})") from None


def write_codebooks(codebooks: torch.Tensor, path: Path) -> None:
    with atomic_path(path) as tmp:
        save_file({"codebooks": codebooks.detach().cpu().contiguous()}, str(tmp))


# ----- the item catalogue ----------------------------------------------------------------------------
def catalogue(items_path: Path) -> dict:
    """The items a model ranks: their number and a digest of their raw ids in item-id order."""
    table = pq.read_table(items_path, columns=["item_id", "raw_item_id"]).sort_by("item_id")
    digest = hashlib.sha256("\n".join(table["raw_item_id"].to_pylist()).encode()).hexdigest()
    return {"items": table.num_rows, "raw_item_ids_sha256": digest}


def check_catalogue(folder: Path, info: dict, items_path: Path) -> None:
    here = catalogue(items_path)
    if info["catalogue"] != here:
        raise MethodError(f"{folder}: trained on a catalogue of {info['catalogue']['items']:,} items, but {items_path} "
                          f"holds {here['items']:,} items"
                          f"{' with other ids' if here['items'] == info['catalogue']['items'] else ''}: "
                          "the model cannot rank this data; re-run its train stage (dvc repro train@<method>)")


# ----- the folder ------------------------------------------------------------------------------------
def upstream_inputs(cls: type[Recommender], inputs: list[str], n_items: int, where: str) -> ModelInputs:
    """The inputs a model class reads, from the folders a params block names (``inputs``)."""
    data = ModelInputs(n_items=n_items)
    sid_dirs = [Path(p) for p in inputs if tokenizer_of(p)]
    if not cls.reads:
        if sid_dirs:  # a DVC dependency the model never reads would re-train it whenever that tokenizer changes
            raise MethodError(f"{where}.inputs: {name_of(cls)} reads no semantic IDs; "
                              f"remove {[str(d) for d in sid_dirs]}")
        return data
    if len(sid_dirs) != 1:
        raise MethodError(f"{where}.inputs: {name_of(cls)} reads semantic IDs: name one tokenizer's IDs, "
                          f"data/processed/semantic_ids/<tokenizer> (got {inputs})")
    sid_dir = sid_dirs[0]
    meta_path = sid_dir / "meta.json"
    if not meta_path.exists():
        raise MethodError(f"{meta_path}: not found; run its stage (dvc repro semantic_ids@{sid_dir.name})")
    data.item_codes = _codes(sid_dir / "ids.parquet", n_items)
    data.codebook_size = int(json.loads(meta_path.read_text())["codebook_size"])
    if READS_CODEBOOKS in cls.reads:
        data.codebooks = read_codebooks(sid_dir / "codebooks.safetensors")
    return data


def write_folder(folder: Path, method: str, model: Recommender, data: ModelInputs, inputs: list[str],
                 items_path: Path) -> None:
    """Everything but the weights: the config, the IDs and codebooks the model reads, the catalogue."""
    folder.mkdir(parents=True, exist_ok=True)
    cls = type(model)
    if READS_SEMANTIC_IDS in cls.reads:
        write_id_table(model.item_codes.cpu().numpy(), folder / IDS_FILE)
    if READS_CODEBOOKS in cls.reads:
        write_codebooks(data.codebooks, folder / CODEBOOKS_FILE)
    write_json({"format": FORMAT, "method": method, "model": name_of(cls), "config": model.config.to_dict(),
                "inputs": inputs, "catalogue": catalogue(items_path)}, folder / MODEL_CONFIG_FILE)


def write_exports(model: Recommender, folder: Path) -> None:
    for name, tensor in model.exports().items():
        with atomic_path(folder / f"{name}.safetensors") as tmp:
            save_file({name: tensor.detach().cpu().contiguous()}, str(tmp))


def read_info(folder: Path) -> dict:
    path = Path(folder) / MODEL_CONFIG_FILE
    if not path.exists():
        raise MethodError(f"{path}: not found; {folder} is not a trained model folder (run dvc repro train@<method>)")
    info = read_json(path)
    if info.get("format") != FORMAT:
        raise MethodError(f"{path}: written by another version of the pipeline (format {info.get('format')}); "
                          "re-run its train stage")
    missing = sorted({"model", "config", "catalogue"} - set(info))
    if missing:
        raise damaged(path, f"no {missing}")
    return info


def load_model(folder: str | Path, device: torch.device | str = "cpu",
               items_path: Path | None = None) -> tuple[Recommender, dict]:
    """The trained model of ``folder``, built from the folder alone; checks the catalogue of ``items_path``."""
    folder = Path(folder)
    info = read_info(folder)
    if items_path is not None:
        check_catalogue(folder, info, items_path)
    cls = model_class(info["model"], f"{folder / MODEL_CONFIG_FILE}: model")
    try:
        config = cls.config_class.from_dict(info["config"])
    except ValueError as exc:
        raise damaged(folder / MODEL_CONFIG_FILE, f"its config does not fit {info['model']}: {exc}") from None
    data = ModelInputs(n_items=config.n_items)
    if READS_SEMANTIC_IDS in cls.reads:
        data.item_codes = _codes(folder / IDS_FILE, data.n_items)
        data.codebook_size = info["config"]["codebook_size"]
    if READS_CODEBOOKS in cls.reads:
        data.codebooks = read_codebooks(folder / CODEBOOKS_FILE)
    model = cls.from_inputs(config, data).to(device)
    weights = folder / WEIGHTS_FILE
    if not weights.exists():
        raise MethodError(f"{weights}: not found; the training of {folder} did not finish (re-run its train stage)")
    load_weights(model, weights)
    return model.eval(), info
