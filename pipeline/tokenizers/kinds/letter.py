"""LETTER (Wang et al., CIKM 2024): the RQ-VAE trained with a collaborative and a diversity regulariser and a
Sinkhorn-balanced last level (``pipeline.tokenizers.letter``); its codes are derived as the RQ-VAE's."""
from __future__ import annotations

from typing import Callable

import numpy as np

from pipeline.tokenizer_schemas import LetterTokenizer
from pipeline.tokenizers.item_vectors import load_embeddings
from pipeline.tokenizers.kinds.rqvae import RQVAEKind
from pipeline.tokenizers.letter import LetterRegulariser, neighbour_code_agreement


class LetterKind(RQVAEKind):
    params = LetterTokenizer

    @classmethod
    def regulariser(cls, block: LetterTokenizer, z: np.ndarray, seed: int,
                    log: Callable[[str], None] = print) -> LetterRegulariser | None:
        """LETTER's regularisers (None when all are off: then it trains as the RQ-VAE, step for step)."""
        if block.collaborative_weight == 0 and block.diversity_weight == 0 and not block.sinkhorn:
            log("LETTER with every regulariser off: the RQ-VAE's training")
            return None
        collaborative = load_embeddings(block.inputs[-1])
        if len(collaborative) != len(z):
            raise ValueError(f"{block.inputs[-1]}: {len(collaborative):,} collaborative vectors for the {len(z):,} "
                             f"items of {block.inputs[0]}; re-run the stages upstream of it (dvc repro)")
        log(f"LETTER: collaborative weight {block.collaborative_weight:g} ({collaborative.shape[1]}-d vectors of "
            f"{block.inputs[-1]}), diversity weight {block.diversity_weight:g} ({block.diversity_clusters} clusters, "
            f"every {block.diversity_refresh_epochs} epoch(s)), "
            f"Sinkhorn last level {'on' if block.sinkhorn else 'off'}")
        return LetterRegulariser(collaborative, block.code_dim, collaborative_weight=block.collaborative_weight,
                                 diversity_weight=block.diversity_weight, clusters=block.diversity_clusters,
                                 refresh_epochs=block.diversity_refresh_epochs,
                                 sinkhorn_epsilon=block.sinkhorn_epsilon if block.sinkhorn else 0.0,
                                 sinkhorn_iters=block.sinkhorn_iters, seed=seed)

    @classmethod
    def code_stats(cls, block: LetterTokenizer, codes: np.ndarray) -> dict:
        """How well the IDs follow the collaborative vectors LETTER was trained on."""
        agreement = neighbour_code_agreement(codes, load_embeddings(block.inputs[-1]), k=10)
        return {"cf_neighbours_share_l1": agreement["share"], "cf_neighbours_share_l1_chance": agreement["chance"]}
