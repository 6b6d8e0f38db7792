"""One registry of tokenizer kinds: the name a ``tokenizers.<name>`` block gives in ``model:`` -> the class that
trains it and derives its codes (``pipeline.tokenizers.kinds``).

Every kind is imported here statically: ``tokenize@<name>`` and ``semantic_ids@<name>`` are one stage for all
kinds, and their code digests (``pipeline.code_deps``, an ast scan of static imports) must cover every kind. Each
kind's params schema lives apart, in ``pipeline.tokenizer_schemas`` (pydantic only), because ``pipeline.config``,
imported by every stage, builds ``TokenizerParams`` from it without loading torch.

Adding a kind: its schema in ``pipeline.tokenizer_schemas.SCHEMAS``, its class in ``KINDS``
(docs/adding_a_tokenizer.md).
"""
from __future__ import annotations

from pipeline.config import ParamsError
from pipeline.tokenizer_schemas import SCHEMAS, TokenizerSchema
from pipeline.tokenizers.kinds.base import TokenizerKind
from pipeline.tokenizers.kinds.external import ExternalKind
from pipeline.tokenizers.kinds.letter import LetterKind
from pipeline.tokenizers.kinds.rqvae import RQVAEKind

KINDS: dict[str, type[TokenizerKind]] = {
    "rqvae": RQVAEKind,
    "letter": LetterKind,
    "external": ExternalKind,
}


def kind_of(block: TokenizerSchema) -> type[TokenizerKind]:
    """The implementation of a tokenizer block (its ``model``), checked to own the block's schema."""
    kind = KINDS.get(block.model)
    if kind is None:
        raise ParamsError(f"tokenizer kind {block.model!r} has no implementation; known kinds: {sorted(KINDS)}")
    if kind.params is not SCHEMAS.get(block.model) or not isinstance(block, kind.params):
        raise ParamsError(f"tokenizer kind {block.model!r}: its block is a {type(block).__name__}, but the kind "
                          f"{kind.__name__} reads {kind.params.__name__} (pipeline.tokenizer_schemas.SCHEMAS and "
                          "pipeline.tokenizers.registry.KINDS must name the same schema)")
    return kind
