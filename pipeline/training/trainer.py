"""One training loop for every method: AdamW, warmup then cosine or inverse-sqrt decay, gradient clipping,
mixed precision on CUDA, validation with the method's own ranking every N epochs, early stopping on
validation NDCG@10, the best checkpoint kept, and resume after an interruption.

A model may train in phases (``Recommender.phases``: which parameters, which loss, how many epochs,
repeated in order) and act between epochs (``Recommender.end_of_epoch``); one optimizer serves all
phases, and parameters outside the current phase get no gradient, so AdamW leaves them untouched. A model
may replace a scheduled phase from its own state (``Recommender.current_phase``) and give parts of itself
their own learning rate (``Recommender.optimizer_settings``). A phase may restart the optimization
(``Phase.restart``: ETEGRec's fine-tuning): at its first epoch, from the best weights so far, a fresh AdamW and
schedule over the epochs left, and a fresh best score and early-stopping count; the restart is recorded in the
"last" checkpoint, so a resumed run rebuilds the same optimizer before loading its state.

The training split lives on the training device (``DeviceSplit``) and every batch is cut there; the loss
is summed on the device and read once per epoch, so a step needs no host sync. ``train.compile`` compiles
the step (CUDA graphs on a GPU). Under ``torchrun`` each process takes its share of every batch and
DistributedDataParallel averages the gradients, so N processes make the updates of one process with the
same batch; rank 0 alone validates, logs and writes checkpoints (``pipeline.runtime.distributed``).

Checkpoints are safetensors plus JSON, never pickles. The "last" checkpoint (model, optimizer,
scheduler and loop state) is written atomically after every epoch and carries a fingerprint of the
run's settings and inputs; a restarted stage resumes from it only when the fingerprint matches.

A device that fails mid-epoch (out of memory, a lost CUDA device) stops the training with a one-line message
naming the epoch, the step and the batch-size key, and the last complete epoch's checkpoint untouched
(``pipeline.runtime.device_failures``; docs/operations.md, "When things fail").
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
from pipeline.data.splits import DeviceSplit, Split
from pipeline.evaluation.metrics import ranking_metrics
from pipeline.evaluation.ranking import rank_split
from pipeline.io import atomic_dir, write_json
from pipeline.models.base import Phase, Recommender, Restart
from pipeline.models.folder import load_weights, save_weights
from pipeline.orchestration.flows import as_task
from pipeline.runtime import distributed
from pipeline.runtime.device_failures import kind_of, training_failure
from pipeline.runtime.devices import resolve_device
from pipeline.runtime.precision import autocast, resolve_precision


class _LossCall(torch.nn.Module):
    """The model's loss of a phase as a module call, which DistributedDataParallel and torch.compile wrap."""

    def __init__(self, model: Recommender):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor], loss: str) -> torch.Tensor:
        return getattr(self.model, loss)(batch)


def resolve_compile(device: torch.device, setting: str | bool) -> bool:
    """train.compile: auto compiles on CUDA only (on a CPU the compiled step did not pay
    for its compilation: docs/performance.md, "Speed")."""
    return setting is True or (setting == "auto" and device.type == "cuda")


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


def make_optimizer(model: Recommender, trainable: dict[str, torch.nn.Parameter], config: TrainConfig,
                   device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices, none on biases and norms; within each, one group per (lr, weight
    decay) the model asks for (``Recommender.optimizer_settings``: ETEGRec's tokenizer has its own learning
    rate). A model that asks for nothing gets the two groups [decay, no decay]."""
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for matrices in (True, False):
        for name, p in trainable.items():
            if (p.ndim >= 2) == matrices:
                key = model.optimizer_settings(name, config.lr, config.weight_decay if matrices else 0.0)
                groups.setdefault(key, []).append(p)
    # fused AdamW on CUDA: one kernel for all parameters instead of several per parameter tensor
    return torch.optim.AdamW([{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()],
                             lr=config.lr, fused=device.type == "cuda")


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, n_train: int, compiled: bool,
                   epochs: int | None = None):
    """The learning-rate schedule over the whole budget (train.epochs of this many optimizer steps each), or over
    ``epochs`` (a restarted phase's: the epochs left)."""
    per_epoch = min(n_train, config.samples_per_epoch or n_train)
    steps_per_epoch = math.ceil(per_epoch / config.batch_size)
    if compiled and steps_per_epoch > 1 and per_epoch % config.batch_size:
        steps_per_epoch -= 1  # the incomplete batch a compiled epoch drops (epoch_batches)
    total = steps_per_epoch * (config.epochs if epochs is None else epochs)
    if config.schedule == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, min(config.warmup_steps, total), total)
    if config.schedule == "inverse_sqrt":
        return get_inverse_sqrt_schedule(optimizer, num_warmup_steps=config.warmup_steps)
    raise ValueError(f"train.schedule must be 'cosine' or 'inverse_sqrt', got {config.schedule!r}")


def wrap_for_processes(net: torch.nn.Module, device: torch.device, world: int, several_phases: bool):
    """The loss module as each process steps it: DistributedDataParallel under torchrun, itself otherwise."""
    if world == 1:
        return net
    # A phase trains part of the parameters: the others get no gradient in that phase.
    return torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                                     find_unused_parameters=several_phases)


def validation_subset(n_valid: int, max_samples: int, seed: int) -> np.ndarray | None:
    """The fixed validation users of every epoch (train.max_eval_samples, drawn once from the seed); None = all."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_valid, max_samples, replace=False)) if 0 < max_samples < n_valid else None


class Trainer:
    def __init__(self, model: Recommender, train: Split, valid: Split, config: TrainConfig, out_dir: str | Path,
                 *, seed: int, device: str = "auto", fingerprint: str = "", log: Callable = print,
                 on_epoch: Callable[[int, dict], None] | None = None, block: str | None = None):
        self.model, self.train_split, self.valid, self.cfg = model, train, valid, config
        self.out_dir, self.seed, self.fingerprint, self.log = Path(out_dir), seed, fingerprint, log
        self.on_epoch = on_epoch
        # the params key of these settings, for messages (the stage's model folder is data/models/<method>)
        self.block = block or f"methods.{self.out_dir.name}"
        self.device = distributed.join(resolve_device(device))  # under torchrun: this rank's GPU
        self.world, self.rank = distributed.world_size(), distributed.rank()
        self.model.to(self.device)
        # What train.precision means on this device (auto: bf16 where native, else fp32); recorded with the run
        self.precision = resolve_precision(self.device, config.precision, "train.precision")
        self.phases = model.phases(config.epochs)
        if not self.phases or any(ph.epochs < 1 for ph in self.phases):
            raise ValueError(f"{type(model).__name__}.phases: each phase needs at least one epoch")
        self.trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
        self.optimizer = make_optimizer(model, self.trainable, config, self.device)
        self.compiled = resolve_compile(self.device, config.compile)
        self.cuda_graphs = self.compiled and self.device.type == "cuda"
        # Static batch shapes where a graph is replayed (and on CUDA, where padding costs nothing but a
        # data-dependent width costs a host sync per step); the longest history of the batch elsewhere.
        self.train_data = DeviceSplit(train, self.device, static_width=self.compiled or self.device.type == "cuda")
        self.net = wrap_for_processes(_LossCall(model), self.device, self.world, several_phases=len(self.phases) > 1)
        self.step_fn: Callable = self.net
        if self.compiled:
            # reduce-overhead = CUDA graphs: a step is one graph replay instead of ~1,000 kernel launches
            # one shape: static; length-grouped batches: shapes dynamic in width after the second one
            self.step_fn = torch.compile(self.net, dynamic=None if config.group_by_length else False,
                                         mode="reduce-overhead" if self.cuda_graphs else None)
        if self.world > 1 and config.batch_size < self.world:
            raise ValueError(f"train.batch_size {config.batch_size} is smaller than the {self.world} processes")
        self.scheduler = make_scheduler(self.optimizer, config, len(train), self.compiled)
        self.epoch, self.best, self.best_epoch, self.bad_evals, self.history = 0, -1.0, 0, 0, []
        self.checkpointed = 0  # the epoch of the "last" checkpoint on disk (0: none yet)
        self.restarted_at: int | None = None  # the 0-based epoch a restarting phase began at (Phase.restart)
        self.eval_idx = validation_subset(len(valid), config.max_eval_samples, seed)

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
                        "restarted_at": self.restarted_at,
                        "scheduler": self.scheduler.state_dict(), "optimizer": opt_scalars,
                        "torch_rng": torch.get_rng_state().tolist()}, tmp / "state.json")
        self.checkpointed = self.epoch

    def try_resume(self) -> bool:
        state_path = self.last_dir / "state.json"
        if not state_path.exists():
            return False
        state = json.loads(state_path.read_text())
        if state.get("fingerprint") != self.fingerprint:
            self.log("found a checkpoint of different settings or inputs: starting from scratch")
            return False
        load_weights(self.model, self.last_dir / "model.safetensors")
        if state.get("restarted_at") is not None:  # the restarted phase's optimizer and schedule, then their state
            self._restart_optimizer(self.phase_at(state["restarted_at"]), state["restarted_at"])
        opt_tensors = load_file(str(self.last_dir / "optimizer.safetensors"))
        opt_tensors.pop("_empty", None)
        self.optimizer.load_state_dict(_unflatten_optimizer(opt_tensors, state["optimizer"]))
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
        self.epoch, self.best, self.best_epoch = state["epoch"], state["best"], state["best_epoch"]
        self.bad_evals, self.history = state["bad_evals"], state["history"]
        self.checkpointed = self.epoch
        self.log(f"resumed after epoch {self.epoch} "
                 f"(best validation NDCG@10 {self.best:.4f} at epoch {self.best_epoch})")
        return True

    # ----- the loop -----------------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        ranked = rank_split(self.model, self.valid, self.cfg.beam_size, self.cfg.eval_batch_size, self.device,
                            idx=self.eval_idx, precision=self.precision)
        targets = self.valid.targets if self.eval_idx is None else self.valid.targets[self.eval_idx]
        return ranking_metrics(ranked, targets)

    def validate_or_stop(self) -> dict[str, float]:
        """``validate``, a device failure stopped with its message (the checkpoint is of the epoch before)."""
        try:
            return self.validate()
        except RuntimeError as exc:
            self._stop_on_device_failure(exc, f"the validation after epoch {self.epoch}", "eval_batch_size",
                                         self.cfg.eval_batch_size)
            raise

    def phase_at(self, epoch: int) -> Phase:
        """The phase of 0-based ``epoch``: the model's phases in order, repeated (a restarting phase, which ends
        the model's phases, is not repeated: it lasts to the end of the budget)."""
        cycle = sum(ph.epochs for ph in self.phases)
        if self.phases[-1].restart is not None and epoch >= cycle - self.phases[-1].epochs:
            return self.phases[-1]
        left = epoch % cycle
        for phase in self.phases:
            if left < phase.epochs:
                return phase
            left -= phase.epochs
        raise AssertionError("unreachable")

    def epoch_batches(self) -> list[tuple[torch.Tensor, int, int | None]]:
        """This epoch's batches: (this process's sample indices on the device, the global batch size, the
        batch's width in history slots or None for the split's own rule).

        A permutation from a generator seeded by (seed, epoch), so a resumed run shuffles exactly as an
        uninterrupted one, cut into train.batch_size chunks (with train.group_by_length, sorted by history
        length within windows of 64 batches first, and the batches shuffled); under torchrun each process
        keeps its share of every chunk. Everything is decided here on the host, once per epoch."""
        gen = np.random.default_rng([self.seed, self.epoch])
        order = gen.permutation(len(self.train_split))
        if 0 < self.cfg.samples_per_epoch < len(order):
            order = order[: self.cfg.samples_per_epoch]
        size = self.cfg.batch_size
        widths = None
        if self.cfg.group_by_length:
            lengths = np.diff(self.train_split.offsets)
            window = 64 * size
            order = np.concatenate([w[np.argsort(lengths[w], kind="stable")]
                                    for w in np.split(order, range(window, len(order), window))])
            starts = np.arange(0, len(order), size)
            starts = starts[gen.permutation(len(starts))]
            order = np.concatenate([order[s:s + size] for s in starts])
            # each batch as wide as its longest history, rounded up to 4 items (fewer shapes to compile)
            widths = [int(-(-lengths[order[s:s + size]].max() // 4) * 4) for s in range(0, len(order), size)]
        order = torch.as_tensor(order, device=self.device)  # one copy per epoch, none per step
        chunks = list(order.split(size))
        widths = widths or [None] * len(chunks)
        if self.compiled and len(chunks) > 1 and len(chunks[-1]) < size:
            # a compiled step has one batch shape (another shape compiles and records a second graph): an
            # incomplete batch is dropped; a fresh permutation each epoch still trains on every sample
            keep = [i for i, c in enumerate(chunks) if len(c) == size]
            chunks, widths = [chunks[i] for i in keep], [widths[i] for i in keep]
        # a chunk smaller than the processes is dropped
        return [(c.tensor_split(self.world)[self.rank], len(c), w) for c, w in zip(chunks, widths)
                if len(c) >= self.world]

    def _step(self, idx: torch.Tensor, width: int | None, loss: str, share: float) -> torch.Tensor:
        data = self.train_data if width is None else self.train_data.with_width(width)
        batch = self.model.make_batch(data, idx, self.device)
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with autocast(self.device, self.precision):
            value = self.step_fn(batch, loss)
        self.optimizer.zero_grad(set_to_none=True)
        # share: this process's part of the global batch times the processes, so that DDP's gradient average
        # is the gradient of the global batch's mean loss (1 in a single process)
        (value * share if share != 1.0 else value).backward()
        return value.detach()

    def _compiled_or_eager_step(self, idx: torch.Tensor, width: int | None, loss: str, share: float) -> torch.Tensor:
        try:
            return self._step(idx, width, loss, share)
        except Exception as exc:  # noqa: BLE001 -- any compiler failure: train eagerly instead
            if self.step_fn is self.net or kind_of(exc) is not None:  # a device failure is no compiler's
                raise
            self.log(f"warning: torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                     "training eagerly (train.compile: false skips the attempt)")
            self.step_fn, self.compiled, self.cuda_graphs = self.net, False, False
            return self._step(idx, width, loss, share)

    def _stop_on_device_failure(self, exc: RuntimeError, during: str, batch_key: str, batch_size: int) -> None:
        """Raise the one-line user error for a device failure (out of memory, a lost CUDA device) met
        ``during`` ("epoch 3, step 17 of 52"); return for any other error, which the caller re-raises."""
        failure = training_failure(exc, block=self.block, during=during, batch_key=batch_key, batch_size=batch_size,
                                   device=self.device, checkpoint=self.last_dir, checkpointed=self.checkpointed)
        if failure is not None:
            raise failure from None

    def train_epoch(self, phase: Phase | None = None) -> float:
        phase = phase or self.model.current_phase(self.phase_at(self.epoch))
        for name, p in self.trainable.items():
            p.requires_grad_(phase.trains is None or phase.trains(name))
        self.model.train()
        total = torch.zeros((), device=self.device)  # summed on the device, read once per epoch: no sync per step
        n = 0
        batches = self.epoch_batches()
        bar = tqdm(batches, desc=f"epoch {self.epoch + 1}", leave=False, mininterval=2,
                   disable=None if distributed.is_main() else True)  # None: no bar without a terminal
        step = 0
        try:
            for step, (idx, global_size, width) in enumerate(bar):
                share = len(idx) * self.world / global_size
                value = self._compiled_or_eager_step(idx, width, phase.loss, share)
                if self.cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                total += value.float() * len(idx)
                n += len(idx)
                if step % 50 == 49:  # one host sync per 50 steps for the progress bar
                    bar.set_postfix(loss=f"{float(total) / n:.4f}", refresh=False)
        except RuntimeError as exc:
            bar.close()
            self._stop_on_device_failure(exc, f"epoch {self.epoch + 1}, step {step + 1} of {len(batches)}",
                                         "batch_size", self.cfg.batch_size)
            raise
        for p in self.trainable.values():
            p.requires_grad_(True)
        if self.world > 1:
            sums = torch.stack([total, torch.tensor(float(n), device=self.device)])
            torch.distributed.all_reduce(sums)
            total, n = sums[0], int(sums[1])
        return float(total) / max(n, 1)

    def _tasks(self, main: bool) -> tuple[Callable, Callable]:
        """The epoch and the validation as Prefect tasks where the stage runs as a flow (rank 0 only), built once
        per fit: each run is named when it starts ("epoch 3", "validate epoch 3"), from the epoch it trains or
        follows."""
        epoch_task = as_task(self.train_epoch, name="fit-epoch",
                             task_run_name=lambda: f"epoch {self.epoch + 1}") if main else self.train_epoch
        validate_task = as_task(self.validate_or_stop, name="validate",
                                task_run_name=lambda: f"validate epoch {self.epoch}")
        return epoch_task, validate_task

    def _restart_optimizer(self, phase: Phase, epoch: int) -> None:
        """A fresh AdamW over the phase's parameters at its restart's learning rate and weight decay (ETEGRec's
        tokenizer, frozen while fine-tuning, has no group in it), and its schedule over the epochs left."""
        restart: Restart = phase.restart
        config = self.cfg.model_copy(update={"lr": restart.lr, "weight_decay": restart.weight_decay,
                                             "warmup_steps": restart.warmup_steps})
        trained = {n: p for n, p in self.trainable.items() if phase.trains is None or phase.trains(n)}
        self.optimizer = make_optimizer(self.model, trained, config, self.device)
        self.scheduler = make_scheduler(self.optimizer, config, len(self.train_split), self.compiled,
                                        epochs=self.cfg.epochs - epoch)
        self.restarted_at = epoch

    def begin_restart(self, phase: Phase, best_path: Path) -> None:
        """Enter ``phase``'s restart: the best weights so far (``from_best``), a fresh optimizer and schedule,
        a fresh best score and early-stopping count (the official ETEGRec ``finetune``)."""
        restart = phase.restart
        if restart.from_best and best_path.exists():
            load_weights(self.model, best_path)
        self._restart_optimizer(phase, self.epoch)
        self.best, self.best_epoch, self.bad_evals = -1.0, 0, 0
        self.log(f"{phase.name}: from the {'best' if restart.from_best else 'current'} weights, a fresh optimizer "
                 f"(lr {restart.lr:g}, weight decay {restart.weight_decay:g}, warm-up {restart.warmup_steps} steps) "
                 f"over the {self.cfg.epochs - self.epoch} epochs left")

    def _rank0_decision(self, out_of_time: bool) -> bool:
        """Rank 0's best score, epoch, count of bad evaluations and time-budget verdict, on every process."""
        decision = torch.tensor([self.best, self.best_epoch, self.bad_evals, float(out_of_time)],
                                dtype=torch.float64, device=self.device)
        torch.distributed.broadcast(decision, 0)
        self.best, self.best_epoch, self.bad_evals = float(decision[0]), int(decision[1]), int(decision[2])
        return bool(decision[3])

    def fit(self) -> dict:
        """Train until the epoch budget or early stopping; the best weights are in ``best.safetensors``."""
        torch.manual_seed(self.seed + self.rank)  # each process its own dropout masks
        main = distributed.is_main()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        best_path = self.out_dir / "best.safetensors"
        # best.safetensors is always written before the "last" checkpoint that records it
        self.try_resume()
        started = time.perf_counter()
        out_of_time = False
        epoch_task, validate_task = self._tasks(main)
        while self.epoch < self.cfg.epochs and self.bad_evals < self.cfg.patience and not out_of_time:
            t0 = time.perf_counter()
            phase = self.model.current_phase(self.phase_at(self.epoch))
            if phase.restart is not None and self.restarted_at is None:
                self.begin_restart(phase, best_path)
            loss = epoch_task(phase)
            self.epoch += 1
            self.model.end_of_epoch(self.epoch, phase)
            row = {"epoch": self.epoch, **({"phase": phase.name} if len(self.phases) > 1 else {}), "train_loss": loss,
                   "lr": self.scheduler.get_last_lr()[0], "epoch_seconds": time.perf_counter() - t0,
                   **self.model.epoch_diagnostics()}
            budget = self.cfg.time_budget_minutes
            out_of_time = budget > 0 and (time.perf_counter() - started) / 60 >= budget
            if main and (self.epoch % self.cfg.eval_every == 0 or self.epoch == self.cfg.epochs or out_of_time):
                metrics = validate_task()
                row.update({f"valid_{k}": v for k, v in metrics.items()})
                if metrics["ndcg@10"] > self.best:
                    self.best, self.best_epoch, self.bad_evals = metrics["ndcg@10"], self.epoch, 0
                    save_weights(self.model, best_path)
                else:
                    self.bad_evals += 1
            if self.world > 1:  # rank 0's decision (and clock) holds for every process
                out_of_time = self._rank0_decision(out_of_time)
            # The wall time goes to the log and MLflow (on_epoch) but not into the history, which DVC records
            # (the curve in reports/plots, last/state.json): the same run must write the same bytes.
            self.history.append({k: v for k, v in row.items() if k != "epoch_seconds"})
            if main:
                self.log(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
                if self.on_epoch:
                    self.on_epoch(self.epoch, row)
                self.save_last()
                if out_of_time:
                    self.log(f"time budget of {budget:g} min reached after epoch {self.epoch}")
        if main and not best_path.exists():  # no validation happened (epochs < eval_every): keep the final weights
            save_weights(self.model, best_path)
        if self.world > 1:
            torch.distributed.barrier()  # the other processes read best.safetensors after this
        if main:
            self.log(f"best validation NDCG@10 {self.best:.4f} at epoch {self.best_epoch}")
        return {"best_valid_ndcg@10": self.best, "best_epoch": self.best_epoch, "epochs_run": self.epoch,
                "precision": self.precision, "device": self.device.type, "compiled": self.compiled,
                "processes": self.world}
