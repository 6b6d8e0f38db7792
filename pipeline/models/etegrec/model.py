"""ETEGRec (Liu et al., "Generative Recommender with End-to-End Learnable Item
Tokenization", SIGIR 2025): TIGER's recommender and its RQ-VAE tokenizer trained together.

- **Warm start** (paper §5.5): the tokenizer is a trained RQ-VAE of the ``tokenizers:`` family, and training
  starts from its IDs. Its weights and the item vectors it reads become part of this model's weights.
- **Sequence-item alignment** (SIA, paper Eq. 14-15): ``z^E = MLP(mean_pool(H^E))`` of the encoder states is
  fed through the tokenizer like an item vector; per level, the code distribution
  ``P^l(x) = softmax_k(-||v_l(x) - e^l_k||^2)`` of ``z^E`` and of the target item's vector are pulled
  together by a symmetric KL. (The paper prints a minus sign before the sum, which would push them apart;
  the text says "enforce similarity", so the KL is minimised. The official code's softmax of
  ``+distance`` is the switch ``sia_sign: official``.)
- **Preference-semantic alignment** (PSA, Eq. 16): symmetric in-batch InfoNCE (cosine over ``temperature``)
  between the first decoder state ``h^D`` and the tokenizer's reconstruction of the target, duplicate
  targets masked. ``h^D`` (width d_model) is projected linearly to the item vectors' width: the paper
  compares the two without saying how their widths meet (our choice).
- **Alternating optimisation** (§4.2.4): cycles of ``cycle_epochs`` = C epochs, one tokenizer epoch
  (``L_SQ + mu L_SIA + lambda L_PSA``, recommender frozen) then C-1 recommender epochs
  (``L_REC + mu L_SIA + lambda L_PSA``, tokenizer frozen). After each tokenizer epoch every item's ID is
  re-derived (RQ codes plus TIGER's collision token: deterministic and unique) and the prefix index
  rebuilt. After ``tokenizer_cycles`` cycles, or once a re-derivation changes fewer than
  ``freeze_below`` of the IDs, the tokenizer is frozen for good and the recommender trains on.
- **Fine-tuning** (paper §4.2.4 and §5.5: the recommender trained to convergence on the frozen tokenizer's
  IDs; the official trainer's ``finetune``): the epochs of the budget left after the cycles are one phase
  that starts from the best validated weights with a fresh AdamW (``finetune_lr``, ``finetune_weight_decay``,
  its own cosine schedule without warm-up), a fresh best score and early stopping, on ``L_REC`` alone.
  ``finetune: false`` trains those epochs as recommender epochs of the cycles (with the alignment terms, in
  the shared optimizer).
- **Loss reductions** (``loss_reductions``): ``official`` weighs the terms as the official code does: ``L_SQ``
  as means over dimensions (the reconstruction's squared error averaged over the item vector's dimensions,
  each level's codebook and commitment terms averaged over the code's and then over the levels), the SIA KL
  averaged over levels and PSA's two InfoNCE directions summed; ``sum`` is the paper's written norms: squared
  norms summed over dimensions and levels (the RQ-VAE stage's own loss), the KL summed over levels and the
  two directions averaged. At the paper's weights the alignment terms are ~in_dim times weaker under ``sum``.
- **Ablations of Table 4** as switches: ``sia_weight: 0`` (w/o SIA), ``psa_weight: 0`` (w/o PSA),
  ``alternating: false`` (joint updates of both every step, ``L_REC + L_SQ + mu L_SIA + lambda L_PSA``, IDs
  re-derived after each such epoch), ``end_to_end: false`` (tokenizer frozen from the start).

The IDs live in a persistent buffer (``ids``), so a checkpoint (the best one, the resumable "last" one)
carries the IDs its weights were trained with; loading it switches the model to them.
"""
from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from pipeline.models.base import READS_SEMANTIC_IDS, READS_TOKENIZER, EpochSums, ModelInputs, Phase, Restart
from pipeline.models.etegrec.alignment import code_logits, symmetric_info_nce, symmetric_kl
from pipeline.models.folder import load_model
from pipeline.models.tiger.model import Tiger, TigerConfig, code_tokens
from pipeline.tokenizers.rqvae import RQVAE, RQVAEConfig
from pipeline.tokenizers.semantic_ids import SemanticIdError, assert_unique, assign_collision_tokens, semantic_id_stats

SIA_SIGNS = {"paper": -1.0, "official": 1.0}
TOKENIZER_PREFIX = "tokenizer."
CODEBOOKS = TOKENIZER_PREFIX + "codebooks"


class EtegrecConfig(TigerConfig):
    # The RQ-VAE's own config (pipeline.tokenizers.rqvae.RQVAEConfig): it comes from the tokenizer the run starts from.
    tokenizer: dict = Field(default_factory=dict)
    sia_weight: float = Field(3e-4, ge=0)  # mu: paper §5.5, best 3e-4 (1e-3 on Game) of {5e-3, 1e-3, 5e-4, 3e-4, 1e-4}
    psa_weight: float = Field(1e-4, ge=0)  # lambda: paper §5.5, best 1e-4 of the same grid
    temperature: float = Field(0.07, gt=0)  # tau of the PSA InfoNCE: not given in the paper; the official code's 0.07
    # official: the official code's means (L_SQ over dimensions and levels, KL over levels, PSA's two directions
    # summed) | sum: the paper's squared norms summed over dimensions and levels, the KL summed over levels
    loss_reductions: Literal["official", "sum"] = "official"
    # paper: softmax(-||v - e||^2) | official: the official code's softmax(+||v - e||^2)
    sia_sign: Literal["paper", "official"] = "paper"
    # C: paper §5.5 tunes C in {2, 4}; at least 2: one tokenizer epoch, then recommender epochs
    cycle_epochs: Annotated[int, Field(strict=True, ge=2)] = 2
    # cycles with a tokenizer epoch before it is frozen (paper: "until it converges")
    tokenizer_cycles: Annotated[int, Field(strict=True, ge=0)] = 3
    freeze_below: float = Field(0.01, ge=0)  # ...or earlier, once a re-derivation changes fewer than this share of IDs
    # paper §5.5 tunes it in {5e-4, 1e-4, 5e-5}; the recommender's is train.lr. 0 = the tokenizer never moves
    # (the control of the ID-churn measurement: its re-derived IDs must be the input IDs)
    tokenizer_lr: float = Field(1e-4, ge=0)
    tokenizer_weight_decay: float = Field(0.05, ge=0)  # paper §5.5: AdamW, weight decay 0.05 for the whole framework
    # The codebooks' weight decay. The paper's "0.05 for the whole framework" (§5.5) may or may not include
    # them; the RQ-VAE stage exempts them (decay pulls every code towards 0), and so does this default. Measured:
    # either way one tokenizer epoch changes as many IDs (docs/methods.md, ETEGRec, the churn controls).
    codebook_weight_decay: float = Field(0.0, ge=0)
    # Precision of the tokenizer's forward pass in tokenizer and joint epochs: fp32 = autocast off there, as
    # the IDs are re-derived (in float32); train = the train block's precision (bf16 autocast where native)
    tokenizer_precision: Literal["fp32", "train"] = "fp32"
    alternating: bool = True  # false: joint updates every step (Table 4, "w/o AO")
    end_to_end: bool = True  # false: the tokenizer stays frozen from the start (Table 4, "w/o ETE")
    # The epochs after the cycles: a fine-tuning phase with a fresh optimizer (the official trainer's finetune:
    # AdamW lr 5e-4, the framework's weight decay, cosine without warm-up, generation loss only) | false: more
    # recommender epochs of the cycles
    finetune: bool = True
    finetune_lr: float = Field(5e-4, gt=0)
    finetune_weight_decay: float = Field(0.05, ge=0)
    finetune_warmup_steps: Annotated[int, Field(strict=True, ge=0)] = 0


def is_tokenizer(name: str) -> bool:
    return name.startswith(TOKENIZER_PREFIX)


def is_recommender(name: str) -> bool:
    return not name.startswith(TOKENIZER_PREFIX)


class Etegrec(Tiger):
    reads = (READS_SEMANTIC_IDS, READS_TOKENIZER)
    config_class = EtegrecConfig
    data_settings = (*Tiger.data_settings, "tokenizer")  # the tokenizer's config comes with its weights

    @classmethod
    def sizes(cls, inputs: ModelInputs, max_history: int) -> dict:
        sizes = super().sizes(inputs, max_history)
        if inputs.tokenizer is None:
            raise ValueError("ETEGRec starts from a trained tokenizer (its inputs name a tokenizer's IDs)")
        return {**sizes, "tokenizer": inputs.tokenizer.config.to_dict()}

    @classmethod
    def from_inputs(cls, config: EtegrecConfig, inputs: ModelInputs) -> "Etegrec":
        model = cls(config, inputs.item_codes)
        if inputs.tokenizer is not None:  # training; a model folder fills these from its weights
            model.tokenizer.load_state_dict(inputs.tokenizer.state_dict())
            model.item_vectors.copy_(inputs.item_vectors)
        return model

    def __init__(self, config: EtegrecConfig, item_codes: torch.Tensor):
        super().__init__(config, item_codes)  # TIGER's T5 first: the same seed gives TIGER's initial weights
        tc = RQVAEConfig.from_dict(config.tokenizer)
        if tc.codebook_size != config.codebook_size or tc.levels + 1 != config.depth:
            raise ValueError(f"the tokenizer has {tc.levels} levels of {tc.codebook_size} codes, but its IDs have "
                             f"{config.depth} tokens of {config.codebook_size} codes")
        self.tokenizer = RQVAE(tc)
        self.tokenizer.initialized.fill_(True)  # never re-initialised by k-means: it starts trained
        self.register_buffer("item_vectors", torch.zeros(config.n_items, tc.in_dim))
        # The IDs these weights go with (saved in every checkpoint); item_codes / item_tokens follow them.
        self.register_buffer("ids", self.item_codes.clone())
        self.register_buffer("tokenizer_frozen", torch.tensor(False))
        d = config.d_model
        # z^E = MLP(mean_pool(H^E)) (paper Eq. 14): into the tokenizer's input space
        self.sequence_projection = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, tc.in_dim))
        self.preference_projection = nn.Linear(d, tc.in_dim)  # h^D to the reconstruction's width (our choice)
        self.register_load_state_dict_post_hook(lambda module, _keys: module._follow_ids())
        self._sums = EpochSums()  # the loss terms of the epoch's batches
        self._id_stats: dict[str, float] = {}

    # ----- IDs ------------------------------------------------------------------------------------
    def _follow_ids(self) -> None:
        self.item_codes.copy_(self.ids)
        self.item_tokens.copy_(code_tokens(self.ids, self.config.codebook_size))
        self._index = None  # the prefix index is rebuilt from the current IDs on the next search

    @torch.no_grad()
    def derive_ids(self) -> np.ndarray:
        """Every item's ID from the current tokenizer: RQ codes of its vector plus TIGER's collision token
        (deterministic: item-id order within a group; unique, or a SemanticIdError naming the group)."""
        codes = self.tokenizer.encode_codes(self.item_vectors).numpy()
        try:
            ids = assign_collision_tokens(codes, self.config.codebook_size)
        except SemanticIdError as exc:  # the tokenizer collapsed while it trained: no unique IDs exist
            raise SemanticIdError(f"re-deriving ETEGRec's IDs after a tokenizer epoch: {exc} Here the tokenizer "
                                  f"collapsed while training: lower backbone.tokenizer_lr "
                                  f"({self.config.tokenizer_lr}) or the alignment weights") from None
        assert_unique(ids)
        return ids

    @torch.no_grad()
    def refresh_ids(self) -> dict[str, float]:
        """Re-derive the IDs, switch to them; return the share changed and the new IDs' statistics."""
        old = self.ids.cpu().numpy().copy()  # a CPU tensor's numpy() shares its memory
        ids = self.derive_ids()
        stats = semantic_id_stats(ids[:, :-1], ids, self.config.codebook_size)
        self.ids.copy_(torch.as_tensor(ids, device=self.ids.device))
        self._follow_ids()
        out = {"ids_changed": float((ids != old).any(1).mean()),
               **{f"ids_changed_l{level + 1}": float((ids[:, level] != old[:, level]).mean())
                  for level in range(ids.shape[1] - 1)},
               **{k: float(v) for k, v in stats.items() if k.startswith("utilisation_l")},
               "collision_rate": float(stats["collision_rate"]), "max_dup_token": float(stats["max_dup_token"])}
        if out["ids_changed"] < self.config.freeze_below:
            self.tokenizer_frozen.fill_(True)
        return out

    # ----- phases ---------------------------------------------------------------------------------
    def phases(self, epochs: int) -> list[Phase]:
        c = self.config
        epochs = max(epochs, 1)
        recommender = lambda n: Phase("recommender", n, "recommender_loss", is_recommender)  # noqa: E731
        if not c.end_to_end or c.tokenizer_cycles == 0:
            return [recommender(epochs)]
        if c.alternating:
            cycle = [Phase("tokenizer", 1, "tokenizer_loss", is_tokenizer), recommender(c.cycle_epochs - 1)]
        else:
            cycle = [Phase("joint", c.cycle_epochs, "joint_loss", None)]
        scheduled = cycle * c.tokenizer_cycles
        rest = epochs - c.tokenizer_cycles * c.cycle_epochs
        if rest <= 0:
            return scheduled
        if c.finetune:
            return scheduled + [Phase("finetune", rest, "finetune_loss", is_recommender,
                                      restart=Restart(c.finetune_lr, c.finetune_weight_decay, c.finetune_warmup_steps))]
        return scheduled + [recommender(rest)]

    def current_phase(self, scheduled: Phase) -> Phase:
        if bool(self.tokenizer_frozen) and scheduled.name in ("tokenizer", "joint"):  # converged: recommender only
            return Phase("recommender", scheduled.epochs, "recommender_loss", is_recommender)
        return scheduled

    def optimizer_settings(self, name: str, lr: float, weight_decay: float) -> tuple[float, float]:
        if name == CODEBOOKS:
            return self.config.tokenizer_lr, self.config.codebook_weight_decay
        if is_tokenizer(name):
            return self.config.tokenizer_lr, self.config.tokenizer_weight_decay if weight_decay > 0 else 0.0
        return lr, weight_decay

    def end_of_epoch(self, epoch: int, phase: Phase) -> None:
        if phase.name in ("tokenizer", "joint"):
            self._id_stats = self.refresh_ids()
        elif phase.name == "finetune":
            self.tokenizer_frozen.fill_(True)  # for good: its IDs are the ones the fine-tuned weights read

    def epoch_diagnostics(self) -> dict[str, float]:
        sums = self._sums.take()
        n = float(sums.pop("samples", 0.0))
        out = {f"loss_{k}": float(v) / n for k, v in sums.items()} if n else {}
        out.update(self._id_stats)
        self._id_stats = {}
        out["tokenizer_frozen"] = float(bool(self.tokenizer_frozen))
        return out

    # Eager even inside a compiled step: the sums outlive the step, and a CUDA graph's outputs are overwritten
    # by its next replay (as DECOR's statistics)
    @torch.compiler.disable
    def _record(self, batch_size: int, **losses: torch.Tensor) -> None:
        if not self.training:
            return
        # batch means times the batch size, summed on the device (read once per epoch: no sync per step)
        self._sums.add(**{k: v.detach().float() * batch_size
                          for k, v in {**losses, "samples": torch.ones((), device=self.ids.device)}.items()})

    # ----- the forward pass -----------------------------------------------------------------------
    def _forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, encoder states H^E, decoder states H^D) of the teacher-forced pass."""
        out = self.teacher_forced(batch)
        return out.logits, out.encoded, out.decoded

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._forward(batch)[0]

    def code_distribution_logits(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, L, K) logits of P^l for latents r = Enc(x): each level's residual against that level's codes,
        the residuals chained through the nearest codes as the RQ-VAE quantises."""
        books = self.tokenizer.codebooks.float()
        residual, residuals = latent.float(), []
        for level in range(books.shape[0]):
            residuals.append(residual)
            with torch.no_grad():
                nearest = torch.cdist(residual, books[level]).argmin(1)
            residual = residual - F.embedding(nearest, books[level])  # repeatable backward, as RQVAE.quantize
        return code_logits(torch.stack(residuals, 1), books, sign=SIA_SIGNS[self.config.sia_sign])

    def _alignment(self, batch: dict[str, torch.Tensor], encoded: torch.Tensor, decoded: torch.Tensor,
                   item_vectors: torch.Tensor, reconstruction: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """mu L_SIA and lambda L_PSA terms (unweighted), in float32 whatever the autocast."""
        out = {}
        with torch.autocast(encoded.device.type, enabled=False):
            if self.config.sia_weight > 0:
                mask = batch["attention_mask"][..., None].float()
                pooled = (encoded.float() * mask).sum(1) / mask.sum(1).clamp(min=1)
                z_seq = self.sequence_projection(pooled)
                out["sia"] = symmetric_kl(self.code_distribution_logits(self.tokenizer.encoder(item_vectors)),
                                          self.code_distribution_logits(self.tokenizer.encoder(z_seq)),
                                          levels="mean" if self._official else "sum")
            if self.config.psa_weight > 0:
                if reconstruction is None:
                    reconstruction = self.tokenizer(item_vectors)["z_hat"]
                preference = self.preference_projection(decoded[:, 0].float())
                out["psa"] = symmetric_info_nce(preference, reconstruction.float(), self.config.temperature,
                                                ids=batch["target"], directions="sum" if self._official else "mean")
        return out

    def _weighted(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        total = 0.0
        if "sia" in terms:
            total = total + self.config.sia_weight * terms["sia"]
        if "psa" in terms:
            total = total + self.config.psa_weight * terms["psa"]
        return total

    def _aligned(self) -> bool:
        return self.config.sia_weight > 0 or self.config.psa_weight > 0

    @property
    def _official(self) -> bool:
        return self.config.loss_reductions == "official"

    def _quantise(self, vectors: torch.Tensor) -> dict[str, torch.Tensor]:
        """The tokenizer's forward pass of a tokenizer or joint epoch, in ``tokenizer_precision``, with ``loss``
        L_SQ in ``loss_reductions``."""
        if self.config.tokenizer_precision == "train":  # whatever autocast the trainer opened
            out = self.tokenizer(vectors)
        else:
            with torch.autocast(vectors.device.type, enabled=False):  # item_vectors are float32
                out = self.tokenizer(vectors)
        if self._official:
            out = {**out, "loss": official_sq_loss(out, vectors, self.tokenizer.config)}
        return out

    # ----- the losses of the phases ---------------------------------------------------------------
    def recommender_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """L_GR = L_REC + mu L_SIA + lambda L_PSA (paper §4.2.4); the tokenizer is frozen in this phase."""
        logits, encoded, decoded = self._forward(batch)
        rec = self.generation_loss(logits, batch["labels"])
        terms = self._alignment(batch, encoded, decoded, self.item_vectors[batch["target"]], None) \
            if self._aligned() else {}
        self._record(len(logits), rec=rec, **terms)
        return rec + self._weighted(terms)

    loss = recommender_loss

    def tokenizer_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """L_IT = L_SQ + mu L_SIA + lambda L_PSA on the batch's target items (paper §4.2.4); the recommender is
        frozen, so its forward pass keeps no graph."""
        vectors = self.item_vectors[batch["target"]]
        quantised = self._quantise(vectors)
        terms = {}
        if self._aligned():
            with torch.no_grad():
                _, encoded, decoded = self._forward(batch)
            terms = self._alignment(batch, encoded, decoded, vectors, quantised["z_hat"])
        self._record(len(vectors), sq=quantised["loss"], **terms)
        return quantised["loss"] + self._weighted(terms)

    def finetune_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The fine-tuning phase's loss: L_REC alone (the official ``finetune`` weighs every other term 0)."""
        logits = self.logits(batch)
        rec = self.generation_loss(logits, batch["labels"])
        self._record(len(logits), rec=rec)
        return rec

    def joint_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Table 4's "w/o alternating optimisation": both parts updated every step on
        L_REC + L_SQ + mu L_SIA + lambda L_PSA."""
        vectors = self.item_vectors[batch["target"]]
        quantised = self._quantise(vectors)
        logits, encoded, decoded = self._forward(batch)
        rec = self.generation_loss(logits, batch["labels"])
        terms = self._alignment(batch, encoded, decoded, vectors, quantised["z_hat"]) if self._aligned() else {}
        self._record(len(vectors), rec=rec, sq=quantised["loss"], **terms)
        return rec + quantised["loss"] + self._weighted(terms)

    def exports(self) -> dict[str, torch.Tensor]:
        # the trained codebooks beside the IDs (the tokenizer's other weights are in best.safetensors)
        return {"codebooks": self.tokenizer.codebooks.detach()}


def official_sq_loss(out: dict[str, torch.Tensor], vectors: torch.Tensor, config: RQVAEConfig) -> torch.Tensor:
    """L_SQ as the official code reduces it: the reconstruction's squared error averaged over the batch and the
    item vector's dimensions, plus each level's codebook and commitment squared errors averaged over the batch and
    the code's dimensions, then over the levels. ``out`` is the RQ-VAE's forward pass, whose ``rq_loss`` sums each
    level's per-item squared norms (batch mean) over the levels: dividing by e x L gives the official mean."""
    recon = (vectors.float() - out["z_hat"].float()).pow(2).mean()
    return recon + out["rq_loss"] / (config.code_dim * config.levels)


def tokenizer_from_folder(folder) -> RQVAE:
    """The trained tokenizer of an ETEGRec model folder, as a stand-alone RQ-VAE (pipeline.tokenizers.rqvae)."""
    model, _ = load_model(folder)
    if not isinstance(model, Etegrec):
        raise ValueError(f"{folder}: not an ETEGRec model folder")
    return model.tokenizer
