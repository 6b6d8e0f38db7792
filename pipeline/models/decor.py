"""DECOR (docs/method_reference.md §5): TIGER with decomposed embedding fusion, contextualized token composition and
learnable BOS queries. Everything else (T5 backbone, loss, constrained decoder, trainer, evaluator) is
TIGER's: only ``embed_encoder`` / ``embed_decoder`` change.

Each component has its own switch so that every row of the paper's ablation (Table 2) is a params block:

- ``fusion`` (C2, "pretrained"): token ``t`` is embedded as ``W_f [LN(W_s S[t]); LN(W_c E_c[t])]`` with
  ``S`` the frozen RQ-VAE codebooks (a buffer: never trained) and ``E_c`` the learned token table.
- ``composition`` (C1): decoder input ``j`` (a code of level ``l``) becomes ``(1-α) x_t + α m_j``, with
  ``m_j`` an attention over all K codes of level ``l`` queried by a pooled context of the history.
- ``bos_queries`` = M > 0: the decoder's first input is composed from M learned queries by the same
  attention (M = 0 keeps TIGER's BOS token).

With all three off, no module is added and the model computes exactly TIGER's logits (tested).
"""
from __future__ import annotations

import math
import warnings
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pipeline.models.base import READS_CODEBOOKS, READS_SEMANTIC_IDS, EpochSums, ModelInputs
from pipeline.models.tiger.model import BOS, FIRST_CODE, Tiger, TigerConfig
from pipeline.models.tiger.t5 import encode


class DecorConfig(TigerConfig):
    fusion: bool = True  # C2: frozen codebooks + collaborative table (paper: "pretrained" rows)
    composition: bool = True  # C1: contextualized token composition
    # M learnable BOS queries. Paper: 32 (Scientific), 64 (Instruments, Games); 0 = TIGER's BOS token.
    bos_queries: Annotated[int, Field(strict=True, ge=0)] = 32
    # α, the weight of the composed embedding. Paper: 0.25 (Scientific), 0.55 (Instruments, Games);
    # α >= 0.7 collapses training (paper §4.4).
    alpha: float = Field(0.25, ge=0.0, le=1.0)
    # (open) The residual equation was lost in extraction. "interpolate": (1-α)·x + α·m, where a small α
    # favours the static embedding as the paper's text says; "additive": x + α·m, the other reading.
    residual: Literal["interpolate", "additive"] = "interpolate"
    # (open) The score of the composition attention. "dot": q.k / sqrt(d), the paper's scaled dot product;
    # its scale is unbounded: the winning code's key norm grows until every sample's weights are one-hot on one
    # shared code (scripts/decor_diagnosis.py records it; docs/decor_collapse.md). "cosine": cos(q, k) / temperature,
    # bounded by 1/temperature (a weight ratio of at most exp(2 / temperature)).
    scores: Literal["dot", "cosine"] = "dot"
    # for scores: cosine (our choice: ratios up to e^20, sharp but never one-hot by scale)
    temperature: float = Field(0.1, gt=0)
    # (open) The composition's context. "pooled": the attention-pooled history token embeddings, then an MLP
    # (our reading of §3.3); "centred": the same minus the mean code-token embedding, the part every user's
    # history shares (users' pooled contexts are nearly parallel: docs/decor_collapse.md).
    context: Literal["pooled", "centred", "encoder"] = "pooled"
    # (open) "encoder": the same pooling and MLP over the encoder's output states instead of its input
    # embeddings. They carry each token in its sequence, not a bag of the history's tokens (our choice).
    # The weight of a bonus for composition weights that differ across users: the training loss subtracts
    # diversity_weight x I(user; code) / log K per level, the mutual information between the batch's users
    # and the codes their weights pick, H(mean of the weights) - mean H(weights). 0 is the paper's loss.
    # A constant composition has I = 0; one-hot weights on a different code per user have I = log(#codes).
    diversity_weight: float = Field(0.0, ge=0)
    # (open) "batch": the context u standardised over the batch's users (batch normalisation without affine
    # parameters; running statistics at inference). It removes the component every user shares, which
    # training otherwise grows until every user's query is the same vector (docs/decor_collapse.md): no code
    # can then win for all users at once. "none": the paper's u = MLP(pooled).
    context_norm: Literal["none", "batch"] = "none"


def user_code_information(weights: torch.Tensor) -> torch.Tensor:
    """I(user; code) / log K per level for composition weights (B, levels, K): the entropy of the batch's mean
    weights minus the mean entropy of each sample's weights. 0 when every user has the same weights; 1 when
    each user is one-hot on its own code and the batch covers all K codes evenly."""
    def entropy(w):
        return -(w * w.clamp_min(1e-12).log()).sum(-1)

    return (entropy(weights.mean(0)) - entropy(weights).mean(0)) / math.log(weights.shape[-1])


def mean_pairwise_cosine(x: torch.Tensor) -> float:
    """The mean cosine between the rows of ``x`` (B, d), each row with every other: 1 = every row points one way."""
    unit = F.normalize(x.float(), dim=1)
    sim = unit @ unit.T
    B = x.shape[0]
    return float((sim.sum() - sim.diagonal().sum()) / max(B * (B - 1), 1))


def level_attention_statistics(weights: torch.Tensor, scores: torch.Tensor, queries: torch.Tensor,
                               keys: torch.Tensor, values: torch.Tensor, active_share: float) -> dict[str, float]:
    """One level's composition attention over a batch (:meth:`Decor.diagnose`): its weights and scores (B, K), the
    queries (B, d), and the level's keys and values (K, d), all float32."""
    B, K = weights.shape
    top = weights.max(dim=1)
    counts = torch.bincount(top.indices, minlength=K)
    entropy = -(weights * weights.clamp_min(1e-12).log()).sum(1) / math.log(K)
    reach = (weights >= 1.0 / K).float().mean(0)  # per code: the share of samples where it reaches 1/K
    ordered = scores.sort(dim=1, descending=True).values
    key_norms = keys.norm(dim=1)
    win = int(counts.argmax())
    return {
        "max_mean": float(top.values.mean()),
        "onehot_share": float((top.values > 0.99).float().mean()),
        "entropy_mean": float(entropy.mean()),
        "distinct_winners": int((counts > 0).sum()),
        "top_winner": win,
        "top_winner_share": float(counts[win]) / B,
        "active_epoch_mean_rule": float((weights.mean(0) >= 1.0 / K).float().mean()),
        "active_per_sample_rule": float((reach >= active_share).float().mean()),
        "query_norm": float(queries.norm(dim=1).mean()),
        "winner_key_norm": float(key_norms[win]),
        "median_key_norm": float(key_norms.median()),
        "score_gap_top2": float((ordered[:, 0] - ordered[:, 1]).mean()),
        "score_std": float(scores.std(dim=1).mean()),
        "value_norm_winner": float(values[win].norm()),
        "value_norm_median": float(values.norm(dim=1).median()),
    }


class Decor(Tiger):
    reads = (READS_SEMANTIC_IDS, READS_CODEBOOKS)
    config_class = DecorConfig

    @classmethod
    def from_inputs(cls, config: DecorConfig, inputs: ModelInputs) -> "Decor":
        return cls(config, inputs.item_codes, inputs.codebooks)

    def __init__(self, config: DecorConfig, item_codes: torch.Tensor, codebooks: torch.Tensor):
        super().__init__(config, item_codes)
        levels, K, e = codebooks.shape
        if K != config.codebook_size or levels >= config.depth:
            raise ValueError(f"codebooks of shape {tuple(codebooks.shape)} do not match IDs with depth "
                             f"{config.depth} and codebook size {config.codebook_size}")
        self.config: DecorConfig = config
        self.code_levels = levels  # learned levels; the collision level has no codebook
        d = config.d_model
        if config.fusion:
            # Frozen semantic table over the vocabulary: codebook vectors for the learned levels, zeros for
            # the collision level and the special tokens (open: we give those the collaborative part only).
            table = torch.zeros(config.vocab_size, e)
            table[FIRST_CODE : FIRST_CODE + levels * K] = codebooks.reshape(levels * K, e).float()
            has_semantic = torch.zeros(config.vocab_size, dtype=torch.bool)
            has_semantic[FIRST_CODE : FIRST_CODE + levels * K] = True
            # Non-persistent buffers: rebuilt from the codebooks stored in the model folder, never trained.
            self.register_buffer("semantic_table", table, persistent=False)
            self.register_buffer("has_semantic", has_semantic, persistent=False)
            self.semantic_proj, self.semantic_norm = nn.Linear(e, d), nn.LayerNorm(d)
            self.collab_proj, self.collab_norm = nn.Linear(d, d), nn.LayerNorm(d)
            self.fuse = nn.Linear(2 * d, d)
        if config.composition or config.bos_queries:
            # Context: additive attention pooling over the history's embeddings, then an MLP (paper §3.3;
            # the MLP's shape is open: two layers with ReLU, our choice).
            self.context_score = nn.Linear(d, d)
            self.context_vector = nn.Linear(d, 1, bias=False)
            self.context_mlp = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))
            if config.context_norm == "batch":
                self.context_standardiser = nn.BatchNorm1d(d, affine=False)
            # One query/key/value projection shared by token composition and the BOS queries ("the same
            # mechanism", paper §3.4).
            self.compose_q = nn.Linear(d, d, bias=False)
            self.compose_k = nn.Linear(d, d, bias=False)
            self.compose_v = nn.Linear(d, d, bias=False)
        if config.bos_queries:
            self.bos_queries = nn.Parameter(torch.randn(config.bos_queries, d) * 0.02)
        # the epoch's composition weights: summed (levels, K), per-sample statistics and the BOS weights (_record)
        self._stats = EpochSums()

    # ----- embeddings -----------------------------------------------------------------------------
    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """TIGER's table, or the fused semantic + collaborative embedding (C2)."""
        collab = self.t5.shared(tokens)
        if not self.config.fusion:
            return collab
        semantic = self.semantic_norm(self.semantic_proj(self.semantic_table[tokens].to(collab.dtype)))
        semantic = semantic * self.has_semantic[tokens][..., None].to(semantic.dtype)
        return self.fuse(torch.cat([semantic, self.collab_norm(self.collab_proj(collab))], dim=-1))

    def embed_encoder(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.token_embeddings(batch["input_ids"])

    def context(self, batch: dict[str, torch.Tensor], h: torch.Tensor | None = None) -> torch.Tensor:
        """u: (B, d) pooled over the history's item tokens (open: the target's own tokens are not included).
        ``h``: what is pooled, when already computed: the encoder's input embeddings of the batch, or its
        output states for ``context: encoder`` (then required)."""
        tokens = batch["input_ids"]
        if h is None:
            if self.config.context == "encoder":
                raise ValueError("context: encoder pools the encoder's output states: pass them as h")
            h = self.token_embeddings(tokens)
        scores = self.context_vector(torch.tanh(self.context_score(h))).squeeze(-1)
        scores = scores.float().masked_fill(tokens < FIRST_CODE, float("-inf"))  # PAD and EOS
        weights = torch.softmax(scores, dim=-1).to(h.dtype)
        pooled = torch.einsum("bs,bsd->bd", weights, h)
        if self.config.context == "centred":
            # minus the mean embedding of every code token: the component all histories share
            codes = FIRST_CODE + torch.arange(self.code_levels * self.config.codebook_size, device=tokens.device)
            pooled = pooled - self.token_embeddings(codes).mean(0).to(pooled.dtype)
        u = self.context_mlp(pooled)
        if self.config.context_norm == "batch":
            norm = self.context_standardiser
            # a single user has no batch to standardise over: running statistics (as at inference)
            use_batch = self.training and u.shape[0] > 1
            u = F.batch_norm(u.float(), norm.running_mean, norm.running_var, training=use_batch,
                             momentum=norm.momentum, eps=norm.eps).to(u.dtype)
        return u

    def _attention(self, u: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The attention's pieces for queries from u (B, d) over ``keys`` (..., N, d): the queries W_Q u (B, d),
        keys W_K x and values W_V x (..., N, d), and the scores (B, ..., N): scaled dot product, or cosine over a
        temperature (``scores``)."""
        q = self.compose_q(u)
        k, v = self.compose_k(keys), self.compose_v(keys)
        if self.config.scores == "cosine":
            unit_q, unit_k = F.normalize(q.float(), dim=-1), F.normalize(k.float(), dim=-1)
            scores = torch.einsum("bd,...nd->b...n", unit_q, unit_k) / self.config.temperature
        else:
            scores = torch.einsum("bd,...nd->b...n", q, k) / math.sqrt(q.shape[-1])
        return q, k, v, scores

    def _attend(self, u: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention of queries W_Q u (B, d) over ``keys`` (..., N, d) -> (values, weights)."""
        _, _, v, scores = self._attention(u, keys)
        weights = torch.softmax(scores.float(), dim=-1).to(v.dtype)
        return torch.einsum("b...n,...nd->b...d", weights, v), weights

    def _code_keys(self, device: torch.device) -> torch.Tensor:
        """The embeddings of every code of every learned level (levels, K, d): what the composition attends over."""
        K = self.config.codebook_size
        level_tokens = FIRST_CODE + torch.arange(self.code_levels * K, device=device).view(self.code_levels, K)
        return self.token_embeddings(level_tokens)

    def composition_weights(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """β over every code of every learned level: composed (B, levels, d) and weights (B, levels, K)."""
        return self._attend(u, self._code_keys(u.device))

    def embed_decoder(self, tokens: torch.Tensor, batch: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        x = self.token_embeddings(tokens)
        cfg = self.config
        if not (cfg.composition or cfg.bos_queries):
            return x
        u = batch["context"] if "context" in batch else self.context(batch)
        if cfg.composition:
            composed, weights = self.composition_weights(u)  # (B, levels, d), (B, levels, K)
            level = ((tokens - FIRST_CODE) // cfg.codebook_size).clamp(0, self.code_levels - 1)
            m = composed.gather(1, level[..., None].expand(-1, -1, composed.shape[-1]))
            mixed = (1 - cfg.alpha) * x + cfg.alpha * m if cfg.residual == "interpolate" else x + cfg.alpha * m
            is_code = (tokens >= FIRST_CODE) & (tokens < FIRST_CODE + self.code_levels * cfg.codebook_size)
            x = torch.where(is_code[..., None], mixed, x)
            if self.training:
                self._record(weights, "composition")
        if cfg.bos_queries:
            bos, bos_weights = self._attend(u, self.bos_queries)
            x = torch.where((tokens == BOS)[..., None], bos[:, None, :].to(x.dtype), x)
            if self.training:
                self._record(bos_weights, "bos")
        return x

    @property
    def _composes(self) -> bool:
        return self.config.composition or self.config.bos_queries > 0

    def with_decoder_context(self, batch: dict[str, torch.Tensor], encoder_embeds: torch.Tensor,
                             encoded: torch.Tensor | None = None) -> dict:
        """The batch with its context u (once per user; beams inherit it), pooled from the encoder's input
        embeddings or, for ``context: encoder``, from its output states ``encoded``."""
        if not self._composes or "context" in batch:
            return batch
        pooled = encoded if self.config.context == "encoder" else encoder_embeds
        return {**batch, "context": self.context(batch, pooled)}

    def _forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Teacher-forced logits and the batch with its context (the encoder runs first when the context
        pools its output states)."""
        out = self.teacher_forced(batch, context_from_encoder=self.config.context == "encoder" and self._composes)
        return out.logits, out.batch

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._forward(batch)[0]

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits, batch = self._forward(batch)
        loss = self.generation_loss(logits, batch["labels"])
        if self.config.diversity_weight and self.config.composition:
            _, weights = self.composition_weights(batch["context"])  # (B, levels, K): cheap beside the T5
            loss = loss - self.config.diversity_weight * user_code_information(weights.float()).mean()
        return loss

    @torch.inference_mode()
    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        encoder_embeds = self.embed_encoder(batch)
        encoded = encode(self.t5, encoder_embeds, batch["attention_mask"])
        return self.with_decoder_context(batch, encoder_embeds, encoded), encoded

    # ----- diagnostics (paper Table 3: how many codes the composition uses) --------------------------
    # Eager even inside a compiled step: the sums outlive the step, and a CUDA graph's outputs are overwritten
    # by its next replay.
    @torch.compiler.disable
    def _record(self, weights: torch.Tensor, kind: str) -> None:
        """Add a batch's weights (B, levels, K) of the composition (``kind`` "composition") or of the BOS
        queries ("bos") to the epoch's sums."""
        weights = weights.detach().float()
        stats = {kind: weights.sum(0)}
        if kind == "composition":
            # per sample (B, levels, K): its largest weight, whether that is one-hot, its entropy, which code
            # wins, and which codes reach the uniform weight 1/K (the epoch mean hides all of this:
            # docs/decor_collapse.md)
            K = weights.shape[-1]
            top = weights.max(dim=-1)
            entropy = -(weights * weights.clamp_min(1e-12).log()).sum(-1) / math.log(K)
            stats.update({"sample_max": top.values.sum(0), "sample_onehot": (top.values > 0.99).float().sum(0),
                          "sample_entropy": entropy.sum(0),
                          "sample_winners": F.one_hot(top.indices, K).float().sum(0),
                          "sample_reach": (weights >= 1.0 / K).float().sum(0)})
        if kind == "composition" or not self.config.composition:
            stats["rows"] = torch.tensor(float(weights.shape[0]), device=weights.device)
        self._stats.add(**stats)

    @torch.no_grad()
    def diagnose(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """The composition attention of one batch (docs/decor_collapse.md; scripts/decor_diagnosis.py records it
        while training): how alike the users' contexts u and queries W_Q u are (``context_cos_mean``,
        ``query_cos_mean``: mean pairwise cosine over the batch), then per level ``l<n>_``: the per-sample weights
        (mean largest weight, share one-hot, mean normalised entropy), which code wins (distinct argmax codes, the
        most frequent and its share), the active codes by the epoch-mean rule and the per-sample rule
        (:meth:`epoch_diagnostics`), and the attention's scale (query norm, the winning code's key norm against the
        median, the gap between the two best scores, the scores' spread, value norms).

        The context is the batch's own where it carries one (``batch["context"]``, as the forward leaves it: a
        training step's); otherwise it is computed as at inference (eval mode, so no dropout and the batch
        standardiser's running statistics). Either way the model's state and the random generator are untouched."""
        if not self.config.composition:
            raise ValueError("this DECOR block has no composition to diagnose (backbone.composition: false)")
        u = batch["context"] if "context" in batch else self._inference_context(batch)
        _, weights = self.composition_weights(u)  # the model's own weights
        q, k, v, scores = self._attention(u, self._code_keys(u.device))
        q, k, v, weights, scores = (t.float() for t in (q, k, v, weights, scores))
        out = {"context_cos_mean": mean_pairwise_cosine(u), "query_cos_mean": mean_pairwise_cosine(q)}
        for level in range(weights.shape[1]):
            stats = level_attention_statistics(weights[:, level], scores[:, level], q, k[level], v[level],
                                               self.ACTIVE_SHARE)
            out.update({f"l{level + 1}_{name}": value for name, value in stats.items()})
        return out

    def _inference_context(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """u as the decoder gets it at inference (:meth:`encode`), in eval mode whatever the model's mode."""
        was_training = self.training
        self.eval()
        try:
            return self.encode(batch)[0]["context"]
        finally:
            self.train(was_training)

    # A code counts as active per sample when it reaches 1/K for at least this share of the samples
    # (docs/decor_collapse.md)
    ACTIVE_SHARE = 0.01
    COLLAPSED = 0.99  # the guard: a mean max weight above this means one code per level, not a composition

    def epoch_diagnostics(self) -> dict[str, float]:
        """The composition weights of the epoch's training samples, per level:

        - over their epoch mean (the paper's Table 3 reading): the share of codes whose mean weight is at
          least uniform (1/K), the largest mean weight, the normalised entropy of the mean weights;
        - per sample: the mean largest weight, the share of samples whose largest weight is > 0.99, the mean
          normalised entropy, the share of codes that win (argmax) for some sample, and the share of codes
          that reach 1/K for at least ACTIVE_SHARE of the samples;

        the same epoch-mean figures for the BOS queries. Warns, naming the level, when the composition has
        collapsed (largest mean weight > 0.99). Resets the sums."""
        out: dict[str, float] = {}
        sums = self._stats.take()
        rows = max(float(sums.get("rows", 0.0)), 1.0)
        if "composition" in sums:
            mean = sums["composition"] / rows  # (levels, K)
            K = mean.shape[-1]
            sample = {k.removeprefix("sample_"): v / rows for k, v in sums.items() if k.startswith("sample_")}
            for level in range(mean.shape[0]):
                w, n = mean[level], level + 1
                out[f"composition_active_l{n}"] = float((w >= 1.0 / K).float().mean())
                out[f"composition_max_l{n}"] = float(w.max())
                out[f"composition_entropy_l{n}"] = float(-(w * w.clamp_min(1e-12).log()).sum() / math.log(K))
                out[f"composition_sample_max_l{n}"] = float(sample["max"][level])
                out[f"composition_sample_onehot_l{n}"] = float(sample["onehot"][level])
                out[f"composition_sample_entropy_l{n}"] = float(sample["entropy"][level])
                out[f"composition_winners_l{n}"] = float((sample["winners"][level] > 0).float().mean())
                out[f"composition_active_per_sample_l{n}"] = float(
                    (sample["reach"][level] >= self.ACTIVE_SHARE).float().mean())
                # I(sample; code) / log K over the epoch: 0 when every sample has the same weights
                out[f"composition_user_information_l{n}"] = (out[f"composition_entropy_l{n}"]
                                                             - out[f"composition_sample_entropy_l{n}"])
                if out[f"composition_max_l{n}"] > self.COLLAPSED:
                    code = int(w.argmax())
                    warnings.warn(f"DECOR composition collapsed at level {n}: code {code} takes {float(w.max()):.3f} "
                                  f"of the mean weight ({out[f'composition_sample_onehot_l{n}']:.0%} of samples "
                                  "one-hot): the composed embedding is one vector for every user, not a composition",
                                  stacklevel=2)
        if "bos" in sums:
            w = sums["bos"] / rows
            out["bos_active"] = float((w >= 1.0 / w.numel()).float().mean())
            out["bos_entropy"] = float(-(w * w.clamp_min(1e-12).log()).sum() / math.log(max(w.numel(), 2)))
        return out
