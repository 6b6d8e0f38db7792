"""Train and evaluate one method: the shared logic behind `train@<method>` and `evaluate@<method>`."""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import torch

from pipeline import paths
from pipeline.config import Params
from pipeline.data.splits import load_splits
from pipeline.io import write_json
from pipeline.models.base import READS_TOKENIZER, Recommender
from pipeline.models.folder import (
    TRAINING_FILE,
    WEIGHTS_FILE,
    load_weights,
    save_weights,
    upstream_inputs,
    write_exports,
    write_folder,
)
from pipeline.models.registry import MethodError, build, model_class
from pipeline.runtime import distributed
from pipeline.tokenizers.item_vectors import tokenizer_inputs
from pipeline.training.fingerprint import fingerprint, training_code_digest
from pipeline.training.trainer import Trainer


def build_method(params: Params, method: str, seq_dir: Path = paths.SEQUENCES_DIR) -> tuple[Recommender, object]:
    """The untrained model of ``methods.<method>`` and the inputs it was built from (read from upstream)."""
    block = params.method(method)
    where = f"params.yaml: methods.{method}"
    cls = model_class(block.model, where)
    n_items = pq.ParquetFile(seq_dir / "items.parquet").metadata.num_rows
    data = upstream_inputs(cls, block.inputs, n_items, where)
    if READS_TOKENIZER in cls.reads:  # the tokenizer behind the IDs, trained further with the model (ETEGRec)
        name = block.tokenizer
        others = [p for p in block.inputs if Path(p).parent == paths.TOKENIZERS_DIR and Path(p).name != name]
        if others:
            raise MethodError(f"{where}.inputs: {others} is not the tokenizer of the IDs it reads "
                              f"({paths.semantic_ids_dir(name)}); name {paths.tokenizer_dir(name)}")
        try:
            data.tokenizer, data.item_vectors = tokenizer_inputs(params.tokenizer(name), paths.tokenizer_dir(name),
                                                                 n_items)
        except (FileNotFoundError, ValueError) as exc:
            raise MethodError(f"{where}: {exc}") from None
    try:
        return build(block.model, block.backbone, data, params.method_history(method), where), data
    except ValueError as exc:  # the semantic IDs themselves cannot drive the constrained decoder
        if isinstance(exc, MethodError):
            raise
        raise MethodError(f"{block.inputs}: {exc}; re-run the semantic_ids stage of this tokenizer") from None


def train_method(params: Params, method: str, out_dir: str | Path, log=print, on_epoch=None,
                 seq_dir: Path = paths.SEQUENCES_DIR) -> tuple[dict, list[dict]]:
    """Fit ``method`` into ``out_dir``: a model folder that stands alone (``pipeline.models.folder``) plus the
    resumable ``last/`` checkpoint."""
    out_dir = Path(out_dir)
    block = params.method(method)
    seed = params.method_seed(method)
    torch.manual_seed(seed)  # the initial weights belong to the seed too
    model, data = build_method(params, method, seq_dir)
    splits = load_splits(seq_dir)
    main = distributed.is_main()  # under torchrun, rank 0 alone writes the model folder
    if main:
        write_folder(out_dir, method, model, data, block.inputs, seq_dir / "items.parquet")
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"{method} ({block.model}): {n_params:,} trainable parameters, {len(splits['train']):,} training samples")
    if model.fits_itself:
        model.fit(splits["train"])
        save_weights(model, out_dir / WEIGHTS_FILE)
        write_exports(model, out_dir)
        write_json({}, out_dir / TRAINING_FILE)
        return {"trainable_parameters": 0, "epochs_run": 0}, []
    inputs = [seq_dir] + [Path(p) for p in block.inputs if Path(p) != seq_dir]
    trainer = Trainer(model, splits["train"], splits["valid"], block.train, out_dir, seed=seed, device=block.device,
                      log=log, on_epoch=on_epoch,
                      fingerprint=fingerprint(block.model_dump(), seed, params.method_history(method),
                                              params.cpu_threads, training_code_digest(block.model), *inputs))
    summary = trainer.fit()
    if not main:
        return {**summary, "trainable_parameters": n_params}, trainer.history
    load_weights(model, out_dir / WEIGHTS_FILE)  # exports come from the selected weights, not the last ones
    # the IDs the selected weights were trained with (ETEGRec re-derives them while it trains)
    write_folder(out_dir, method, model, data, block.inputs, seq_dir / "items.parquet")
    write_exports(model, out_dir)
    # The training budget travels with the model, so the report can show it beside the metrics: a method
    # trained for fewer epochs must not look comparable.
    # precision/device: what train.precision resolved to on this machine (auto differs across CPUs)
    write_json({"epoch": summary["epochs_run"], "best_epoch": summary["best_epoch"],
                "precision": summary["precision"], "device": summary["device"]}, out_dir / TRAINING_FILE)
    return {**summary, "trainable_parameters": n_params}, trainer.history
