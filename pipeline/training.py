"""One training loop for every method: AdamW, warmup then cosine or inverse-sqrt decay, gradient clipping,
mixed precision on CUDA, validation with the method's own ranking every N epochs, early stopping on
validation NDCG@10, the best checkpoint kept, and resume after an interruption.

A model may train in phases (``Recommender.phases``: which parameters, which loss, how many epochs,
repeated in order) and act between epochs (``Recommender.end_of_epoch``); one optimizer serves all
phases, and parameters outside the current phase get no gradient, so AdamW leaves them untouched.

Checkpoints are safetensors plus JSON, never pickles. The "last" checkpoint (model, optimizer,
scheduler and loop state) is written atomically after every epoch and carries a fingerprint of the
run's settings and inputs; a restarted stage resumes from it only when the fingerprint matches.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup, get_inverse_sqrt_schedule

from pipeline.config import TrainConfig
from pipeline.devices import resolve_device
from pipeline.io import atomic_dir, write_json
from pipeline.metrics import ranking_metrics
from pipeline.model_folder import load_weights, save_weights
from pipeline.models.base import Phase, Recommender
from pipeline.precision import autocast, resolve_precision
from pipeline.ranking import rank_split
from pipeline.recdata import Split


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, s in state["state"].items():
        for name, v in s.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{name}"] = v.detach().cpu().contiguous()
            else:
                scalars["state"].setdefault(str(pid), {})[name] = v
    return tensors, scalars


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], scalars: dict) -> dict:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    for pid, s in scalars["state"].items():
        state.setdefault(int(pid), {}).update(s)
    return {"state": state, "param_groups": scalars["param_groups"]}


class Trainer:
    def __init__(self, model: Recommender, train: Split, valid: Split, config: TrainConfig, out_dir: str | Path,
                 *, seed: int, device: str = "auto", fingerprint: str = "", log: Callable = print,
                 on_epoch: Callable[[int, dict], None] | None = None):
        self.model, self.train_split, self.valid, self.cfg = model, train, valid, config
        self.out_dir, self.seed, self.fingerprint, self.log = Path(out_dir), seed, fingerprint, log
        self.on_epoch = on_epoch
        self.device = resolve_device(device)
        self.model.to(self.device)
        # What train.precision means on this device (auto: bf16 where native, else fp32); recorded with the run
        self.precision = resolve_precision(self.device, config.precision, "train.precision")
        self.phases = model.phases(config.epochs)
        if not self.phases or any(ph.epochs < 1 for ph in self.phases):
            raise ValueError(f"{type(model).__name__}.phases: each phase needs at least one epoch")
        self.trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
        decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]  # biases, norms
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
        per_epoch = min(len(train), config.samples_per_epoch or len(train))
        steps_per_epoch = math.ceil(per_epoch / config.batch_size)
        total = steps_per_epoch * config.epochs
        if config.schedule == "cosine":
            self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, min(config.warmup_steps, total), total)
        elif config.schedule == "inverse_sqrt":
            self.scheduler = get_inverse_sqrt_schedule(self.optimizer, num_warmup_steps=config.warmup_steps)
        else:
            raise ValueError(f"train.schedule must be 'cosine' or 'inverse_sqrt', got {config.schedule!r}")
        self.epoch, self.best, self.best_epoch, self.bad_evals, self.history = 0, -1.0, 0, 0, []
        rng = np.random.default_rng(seed)
        n_eval = config.max_eval_samples
        self.eval_idx = np.sort(rng.choice(len(valid), n_eval, replace=False)) if 0 < n_eval < len(valid) else None

    # ----- checkpoints --------------------------------------------------------------------------------
    @property
    def last_dir(self) -> Path:
        return self.out_dir / "last"

    def save_last(self) -> None:
        opt_tensors, opt_scalars = _flatten_optimizer(self.optimizer.state_dict())
        with atomic_dir(self.last_dir) as tmp:
            save_weights(self.model, tmp / "model.safetensors")
            save_file(opt_tensors or {"_empty": torch.zeros(1)}, str(tmp / "optimizer.safetensors"))
            write_json({"fingerprint": self.fingerprint, "epoch": self.epoch, "best": self.best,
                        "best_epoch": self.best_epoch, "bad_evals": self.bad_evals, "history": self.history,
                        "scheduler": self.scheduler.state_dict(), "optimizer": opt_scalars,
                        "torch_rng": torch.get_rng_state().tolist()}, tmp / "state.json")

    def try_resume(self) -> bool:
        state_path = self.last_dir / "state.json"
        if not state_path.exists():
            return False
        state = json.loads(state_path.read_text())
        if state.get("fingerprint") != self.fingerprint:
            self.log("found a checkpoint of different settings or inputs: starting from scratch")
            return False
        load_weights(self.model, self.last_dir / "model.safetensors")
        opt_tensors = load_file(str(self.last_dir / "optimizer.safetensors"))
        opt_tensors.pop("_empty", None)
        self.optimizer.load_state_dict(_unflatten_optimizer(opt_tensors, state["optimizer"]))
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
        self.epoch, self.best, self.best_epoch = state["epoch"], state["best"], state["best_epoch"]
        self.bad_evals, self.history = state["bad_evals"], state["history"]
        self.log(f"resumed after epoch {self.epoch} (best validation NDCG@10 {self.best:.4f} at epoch {self.best_epoch})")
        return True

    # ----- the loop -----------------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        ranked = rank_split(self.model, self.valid, self.cfg.beam_size, self.cfg.eval_batch_size, self.device,
                            idx=self.eval_idx, precision=self.precision)
        targets = self.valid.targets if self.eval_idx is None else self.valid.targets[self.eval_idx]
        return ranking_metrics(ranked, targets)

    def phase_at(self, epoch: int) -> Phase:
        """The phase of 0-based ``epoch``: the model's phases in order, repeated."""
        cycle = sum(ph.epochs for ph in self.phases)
        left = epoch % cycle
        for phase in self.phases:
            if left < phase.epochs:
                return phase
            left -= phase.epochs
        raise AssertionError("unreachable")

    def train_epoch(self, phase: Phase | None = None) -> float:
        phase = phase or self.phase_at(self.epoch)
        for name, p in self.trainable.items():
            p.requires_grad_(phase.trains is None or phase.trains(name))
        loss_fn = getattr(self.model, phase.loss)
        self.model.train()
        # A generator seeded per epoch: a resumed run shuffles exactly as an uninterrupted one.
        gen = np.random.default_rng([self.seed, self.epoch])
        total, n = 0.0, 0
        order = gen.permutation(len(self.train_split))
        if 0 < self.cfg.samples_per_epoch < len(order):
            order = order[: self.cfg.samples_per_epoch]
        chunks = [order[i : i + self.cfg.batch_size] for i in range(0, len(order), self.cfg.batch_size)]
        bar = tqdm(chunks, desc=f"epoch {self.epoch + 1}", leave=False, mininterval=2)
        for idx in bar:
            batch = self.model.make_batch(self.train_split, idx, self.device)
            with autocast(self.device, self.precision):
                loss = loss_fn(batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            value = float(loss.detach())
            total += value * len(idx)
            n += len(idx)
            bar.set_postfix(loss=f"{value:.4f}", refresh=False)  # shown at the bar's own pace
        for p in self.trainable.values():
            p.requires_grad_(True)
        return total / max(n, 1)

    def fit(self) -> dict:
        """Train until the epoch budget or early stopping; the best weights are in ``best.safetensors``."""
        torch.manual_seed(self.seed)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        best_path = self.out_dir / "best.safetensors"
        # best.safetensors is always written before the "last" checkpoint that records it
        self.try_resume()
        started = time.perf_counter()
        out_of_time = False
        while self.epoch < self.cfg.epochs and self.bad_evals < self.cfg.patience and not out_of_time:
            t0 = time.perf_counter()
            phase = self.phase_at(self.epoch)
            loss = self.train_epoch(phase)
            self.epoch += 1
            self.model.end_of_epoch(self.epoch, phase)
            row = {"epoch": self.epoch, **({"phase": phase.name} if len(self.phases) > 1 else {}), "train_loss": loss,
                   "lr": self.scheduler.get_last_lr()[0], "epoch_seconds": time.perf_counter() - t0,
                   **self.model.epoch_diagnostics()}
            budget = self.cfg.time_budget_minutes
            out_of_time = budget > 0 and (time.perf_counter() - started) / 60 >= budget
            if self.epoch % self.cfg.eval_every == 0 or self.epoch == self.cfg.epochs or out_of_time:
                metrics = self.validate()
                row.update({f"valid_{k}": v for k, v in metrics.items()})
                if metrics["ndcg@10"] > self.best:
                    self.best, self.best_epoch, self.bad_evals = metrics["ndcg@10"], self.epoch, 0
                    save_weights(self.model, best_path)
                else:
                    self.bad_evals += 1
            # The wall time goes to the log and MLflow (on_epoch) but not into the history, which DVC records
            # (the curve in reports/plots, last/state.json): the same run must write the same bytes.
            self.history.append({k: v for k, v in row.items() if k != "epoch_seconds"})
            self.log(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
            if self.on_epoch:
                self.on_epoch(self.epoch, row)
            self.save_last()
            if out_of_time:
                self.log(f"time budget of {budget:g} min reached after epoch {self.epoch}")
        if not best_path.exists():  # no validation happened (epochs < eval_every): keep the final weights
            save_weights(self.model, best_path)
        self.log(f"best validation NDCG@10 {self.best:.4f} at epoch {self.best_epoch}")
        return {"best_valid_ndcg@10": self.best, "best_epoch": self.best_epoch, "epochs_run": self.epoch,
                "precision": self.precision, "device": self.device.type}

