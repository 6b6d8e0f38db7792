"""Typed, validated parameters.

Every stage reads ``params.yaml`` through :func:`load_params`; an unknown key or a value out of range
stops the stage with a message naming the key (README, "The stages").
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from pipeline.errors import UserError
from pipeline.paths import tokenizer_of
from pipeline.source_names import SOURCES
from pipeline.tokenizer_schemas import (  # noqa: F401 (re-exported: the schemas of params.yaml's tokenizers)
    DEFAULT_KIND,
    SCHEMAS,
    ExternalTokenizer,
    LetterTokenizer,
    RQVAETokenizer,
    TokenizerSchema,
)


class ParamsError(UserError, ValueError):
    """params.yaml is missing, unreadable, or has a bad key/value."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Precision = Literal["auto", "bf16", "fp32"]


class TrainConfig(_Strict):
    """The one trainer's settings (``methods.<name>.train``); defaults are the DECOR appendix's."""
    epochs: int = Field(200, ge=0)  # DECOR appendix: <= 200 epochs
    batch_size: int = Field(256, ge=1)  # DECOR appendix / DiscRec: 256
    lr: float = Field(3e-3, gt=0)  # DECOR appendix: 0.003
    weight_decay: float = Field(0.05, ge=0)  # DECOR appendix: 0.05
    warmup_steps: int = Field(10_000, ge=0)  # DECOR appendix: 10k warmup steps
    schedule: Literal["cosine", "inverse_sqrt"] = "cosine"  # DECOR appendix: cosine; inverse_sqrt as in T5
    max_grad_norm: float = Field(1.0, ge=0)  # DECOR appendix: 1.0 (0 = no clipping)
    eval_every: int = Field(1, ge=1)  # epochs between validations
    patience: int = Field(20, ge=1)  # validations without improvement before stopping (DECOR: 20)
    eval_batch_size: int = Field(256, ge=1)
    beam_size: int = Field(20, ge=1)  # validation list length; beam size for generative models (DECOR: 50)
    # Validation users per evaluation: a fixed random subset (drawn once from the seed) where the split is larger,
    # 0 = all. Validation only picks the best epoch and stops early; the test ranking always covers every user.
    # What the subset loses: NDCG@10's standard error over 2,000 users is about twice that over 8,000 (the Amazon
    # Scientific split), so two epochs closer than that may be picked in either order. docs/performance.md, "Speed".
    max_eval_samples: int = Field(2000, ge=0)
    # 0 = every training sample each epoch; >0 = a fresh random subset of this size per epoch (our
    # choice for CPU budgets on the embedded default; the papers train on everything).
    samples_per_epoch: int = Field(0, ge=0)
    # 0 = no limit; >0 = stop after the epoch that crosses this many minutes of this process's training
    # (validated at that epoch), for "as long as the session allows" runs. Resuming starts a new budget.
    time_budget_minutes: float = Field(0.0, ge=0)
    # auto = bf16 autocast where bfloat16 is native (CUDA; CPUs with AVX512-BF16/AMX, where it runs faster),
    # float32 elsewhere | bf16 = bf16 autocast, refused on a CPU that would emulate it (several times slower than
    # float32) unless GENREC_FORCE_BF16=1 | fp32 = no autocast anywhere (bit-for-bit comparisons across machines).
    # pipeline/runtime/precision.py; the resolved value is recorded. The speeds: `benchmarks/bench_train.py
    # --both-precisions` (docs/performance.md, "Precision").
    precision: Precision = "auto"
    # auto = torch.compile on CUDA (with CUDA graphs: static batch shapes, one graph replay per step), eager
    # on a CPU, where the compiled step did not pay for its compilation (`benchmarks/bench_train.py --compile on`
    # times both; docs/performance.md, "Speed") | true | false.
    # A model or machine that cannot be compiled falls back to eager with a warning; what ran is recorded.
    compile: Literal["auto"] | bool = "auto"
    # false = batches are consecutive chunks of the epoch's random permutation (every paper's loader) |
    # true = within windows of 64 batches, samples are sorted by history length before cutting, and the batches
    # are shuffled: each batch is as wide as its own longest history, so short histories are not padded to 20
    # items (as HF Trainer's group_by_length). Eager this saves the padding's work; compiled it is slower, as
    # varying shapes make the kernels dynamic (benchmarks/bench_train.py times it; docs/performance.md, "Speed").
    group_by_length: bool = False


class LocalSource(_Strict):
    # Directory holding the user's own files. It is a DVC dependency of `download`, so editing a file
    # there re-runs the pipeline. Paths inside it are given relative to it.
    dir: str = "data/local"
    # "sequences": LC-Rec/LETTER layout, <name>.inter.json = {user: [item, ...]} (chronological) and an
    # optional <name>.item.json = {item: {title, description, ...}}.
    # "table": an interactions table (CSV/TSV/Parquet/JSONL) with user, item and timestamp columns, and
    # an optional items table keyed by the same item column.
    format: Literal["sequences", "table"] = "sequences"
    name: str = ""
    interactions: str = ""
    items: str = ""
    user_column: str = "user_id"
    item_column: str = "item_id"
    time_column: str = "timestamp"


class DataParams(_Strict):
    # amazon-scientific: the embedded default (data/embedded/amazon-scientific/SOURCE.md); the others download
    # (movielens-100k, the Amazon releases) or read your files (local). The known names: pipeline/source_names.py.
    source: str = "amazon-scientific"
    # Amazon category as spelled in the release's file names (docs/data.md, "The papers' datasets").
    category: str = "Industrial_and_Scientific"
    # amazon2023: raw review file + metadata (reproduces the 5-core counts through `filter`), or the
    # official 5-core rating-only CSV + metadata (smaller download, same counts).
    amazon2023_files: Literal["raw_reviews", "benchmark_5core"] = "benchmark_5core"
    # amazon2018: the 5-core review file, or the ratings-only CSV (LC-Rec's starting point).
    amazon2018_files: Literal["reviews_5core", "ratings"] = "reviews_5core"
    local: LocalSource = LocalSource()
    # Mirror roots, tried in order (docs/data.md, "The papers' datasets").
    mirrors: dict[str, list[str]] = Field(default_factory=dict)
    timeout_s: float = Field(30.0, gt=0)
    retries: int = Field(3, ge=0, le=20)

    @field_validator("source")
    @classmethod
    def _known_source(cls, source: str) -> str:
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}; known sources: {', '.join(sorted(SOURCES))} "
                             f"(adding one: docs/adding_a_dataset.md)")
        return source

    @property
    def dataset_name(self) -> str:
        """The name runs and reports use for this dataset (one MLflow experiment per dataset): the source's
        template in pipeline/source_names.py."""
        local = self.local.name or Path(self.local.interactions).stem or "data"
        return SOURCES[self.source].dataset.format(category=self.category, local=local)


class FilterParams(_Strict):
    # Iterative k-core on users and items (docs/method_reference.md §1: 5 in every paper).
    k: int = Field(5, ge=1)
    # Most recent items kept as history (docs/method_reference.md §1: 20 for TIGER/DECOR/DiscRec/LETTER, 50 ETEGRec).
    max_history: int = Field(20, ge=1)
    # Malformed lines (unparseable JSON/CSV) are skipped and counted; more than this stops the stage.
    max_bad_lines: int = Field(1000, ge=0)
    # LC-Rec's processing drops items without metadata before k-core (the LC-Rec paper, Amazon 2018);
    # the official Amazon 2023 5-core files keep them. Off by default.
    require_metadata: bool = False


class TemplateParams(_Strict):
    # Fields in order. DECOR's framework uses title, features, categories, description (the DECOR paper);
    # genres and year describe MovieLens. Fields absent from the items table are skipped.
    # brand: the references' item text (TIGER §4.1: title, price, category, brand; LETTER: title + description).
    fields: list[str] = ["title", "brand", "features", "categories", "description", "genres", "year"]
    separator: str = " "  # between fields (DECOR: a space)
    field_end: str = "."  # appended to a field that does not end a sentence (DECOR: each field ends with ".")
    field_labels: bool = False  # "title: ..." prefixes; our choice: off, as in DECOR
    max_words_per_field: int = Field(0, ge=0)  # 0 keeps whole fields; the encoder truncates tokens anyway
    max_chars: int = Field(0, ge=0)  # 0 = no cut of the joined text


class EmbedParams(_Strict):
    # Offline default (all-MiniLM-L6-v2, 384-d, shipped in a PyPI wheel). The papers' encoder is
    # sentence-transformers/sentence-t5-base (768-d, needs the model hub or a local copy).
    model: str = "packaged:all-MiniLM-L6-v2"
    template: TemplateParams = TemplateParams()
    batch_size: int = Field(64, ge=1)
    max_seq_length: int = Field(256, ge=0)  # encoder token limit; 0 keeps the model's own
    # L2-normalise the vectors (on top of the model: all-MiniLM-L6-v2 already ends with a Normalize layer,
    # sentence-t5-base does too); our choice, as the RQ-VAE then sees vectors of one scale.
    normalize: bool = True
    device: str = "auto"
    # The embed stage refuses a catalogue with more empty texts than this share: semantic IDs of empty strings
    # are meaningless (an items file keyed by other ids than the interactions gives no item a text). 1 = allow.
    max_empty_share: float = Field(0.05, ge=0, le=1)


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # a block name is a folder name and part of a stage name


TOKENIZER_KINDS = tuple(SCHEMAS)


def _tokenizer_kind(block) -> str:
    return block.get("model", DEFAULT_KIND) if isinstance(block, dict) else getattr(block, "model", DEFAULT_KIND)


# One schema per tokenizer kind (pipeline/tokenizer_schemas.py), chosen by `model` (a block without one is an
# RQ-VAE); an unknown `model` is reported with the known kinds (_format_error).
TokenizerParams = Annotated[Union[tuple(Annotated[schema, Tag(kind)] for kind, schema in SCHEMAS.items())],
                            Discriminator(_tokenizer_kind)]


class MethodParams(_Strict):
    """One ``methods.<name>`` block; ``backbone`` is checked by the model's own config class when built."""
    model: str  # a name of pipeline.models.registry.MODELS
    # What the method reads besides the splits: data/interim/sequences, or a tokenizer's IDs
    # data/processed/semantic_ids/<tokenizer>. DVC deps of train@<name> (first and last entry).
    inputs: list[str] = Field(min_length=1, max_length=2)
    backbone: dict = Field(default_factory=dict)
    train: TrainConfig = TrainConfig()
    device: str = "auto"
    # This method's own training seed (default: the top-level seed), so that a seed study re-runs only the
    # method (`dvc exp run -S methods.tiger.seed=1`) and not the tokenizer upstream.
    seed: int | None = Field(None, ge=0)  # numpy's generators refuse negative seeds
    # History items this method's samples read (the most recent ones): default filter.max_history, which is also
    # the most it can read (the filter stage keeps no more). The papers differ: 20 for TIGER, DECOR, DiscRec and
    # LETTER, 50 for ETEGRec (its §5.1); with filter.max_history 50, the 20-item methods set max_history: 20.
    max_history: int | None = Field(None, ge=1)

    @property
    def tokenizer(self) -> str | None:
        """The tokenizer whose IDs the method reads (None for a method that reads none)."""
        return next((t for t in map(tokenizer_of, self.inputs) if t), None)


class EvaluateParams(_Strict):
    # The papers rank all items, seen ones included; true = RecBole's policy, for every method alike.
    mask_seen: bool = False
    beam_size: int = Field(20, ge=1)  # list length (ETEGRec/DiscRec/LETTER: 20; DECOR decodes with 50)
    batch_size: int = Field(128, ge=1)
    precision: Precision = "auto"  # as train.precision (pipeline/runtime/precision.py); the resolved one is recorded
    device: str = "auto"


class ReportParams(_Strict):
    baseline: str = "tiger"  # reports/comparison.md: change and paired tests against this method
    # resamples of the paired bootstrap intervals (BCa): 4,999 by default (pipeline/evaluation/comparison.py); fewer
    # for a quick look, at intervals whose endpoints move more with the resampling seed
    bootstrap_resamples: int = Field(4999, ge=99)


class Params(_Strict):
    # Settings shared by a family of blocks (params.yaml, "defaults"): a block's ``extends`` names one, and
    # :func:`resolve_extends` fills in what the block does not set before this schema checks the result.
    defaults: dict[str, dict] = Field(default_factory=dict)
    # Shared seed (DECOR appendix: 2025).
    seed: int = Field(2025, ge=0)
    # torch threads of train@ and evaluate@ on a CPU: their bytes depend on the count
    # (pipeline/runtime/reproducible.py), so it is a setting recorded in dvc.lock and not the machine's core count.
    cpu_threads: int = Field(2, ge=1)
    data: DataParams = DataParams()
    filter: FilterParams = FilterParams()
    embed: EmbedParams = EmbedParams()
    tokenizers: dict[str, TokenizerParams] = Field(default_factory=lambda: {"rqvae": RQVAETokenizer()})
    # Tokenizer blocks outside the default DAG (dvc.yaml iterates `tokenizers` only), for the methods of
    # `more_methods` that read them: validated like `tokenizers`; moving one under `tokenizers` adds its stages.
    more_tokenizers: dict[str, TokenizerParams] = Field(default_factory=dict)
    methods: dict[str, MethodParams] = Field(default_factory=dict)
    # Blocks outside the default DAG (dvc.yaml iterates `methods` only): validated like `methods`, and run by
    # scripts/seed_study.py or scripts/run_method.py by name; moving one under `methods` adds its stages.
    more_methods: dict[str, MethodParams] = Field(default_factory=dict)
    evaluate: EvaluateParams = EvaluateParams()
    report: ReportParams = ReportParams()

    @model_validator(mode="after")
    def _names_and_references(self):
        for section in ("tokenizers", "more_tokenizers", "methods", "more_methods"):
            for name in getattr(self, section):
                if not re.match(NAME_PATTERN, name):
                    raise ValueError(f"{section}.{name}: a block name may hold letters, digits, '_', '.' and '-' only")
        for kind in ("methods", "tokenizers"):
            both = sorted(set(getattr(self, kind)) & set(getattr(self, f"more_{kind}")))
            if both:
                raise ValueError(f"{both}: defined in both {kind} and more_{kind}; keep each block in one of them")
        for section in ("methods", "more_methods"):
            # a default-DAG method reads IDs the DAG makes; one outside it may read a tokenizer outside it too
            known = self.tokenizers if section == "methods" else {**self.tokenizers, **self.more_tokenizers}
            for name, block in getattr(self, section).items():
                for path in block.inputs:
                    t = tokenizer_of(path)
                    if t is not None and t not in known:
                        where = "more_tokenizers: move it under tokenizers" if t in self.more_tokenizers else "no block"
                        raise ValueError(f"{section}.{name}.inputs: {path} is the IDs of tokenizer {t!r}, which has "
                                         f"{where} in tokenizers (defined: {sorted(self.tokenizers)})")
                if block.max_history is not None and block.max_history > self.filter.max_history:
                    raise ValueError(f"{section}.{name}.max_history: {block.max_history} items, but the filter stage "
                                     f"keeps {self.filter.max_history} (filter.max_history); raise that to "
                                     f"{block.max_history} or lower this")
        return self

    def method(self, name: str) -> MethodParams:
        """The block ``name`` of ``methods`` or, outside the default DAG, of ``more_methods``."""
        block = self.methods.get(name) or self.more_methods.get(name)
        if block is None:
            raise ParamsError(f"params.yaml: no block methods.{name}; defined: {sorted(self.methods)}"
                              + (f", more_methods: {sorted(self.more_methods)}" if self.more_methods else ""))
        return block

    def tokenizer(self, name: str) -> TokenizerParams:
        """The block ``name`` of ``tokenizers`` or, outside the default DAG, of ``more_tokenizers``."""
        block = self.tokenizers.get(name) or self.more_tokenizers.get(name)
        if block is None:
            raise ParamsError(f"params.yaml: no block tokenizers.{name}; defined: {sorted(self.tokenizers)}"
                              + (f", more_tokenizers: {sorted(self.more_tokenizers)}" if self.more_tokenizers else ""))
        return block

    def method_history(self, name: str) -> int:
        """How many of the most recent history items method ``name`` reads."""
        history = self.method(name).max_history
        return self.filter.max_history if history is None else history

    def method_seed(self, name: str) -> int:
        seed = self.method(name).seed
        return self.seed if seed is None else seed


def _format_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid parameters:"]
    for e in err.errors():
        loc = list(e["loc"])
        if len(loc) > 2 and loc[0] in ("tokenizers", "more_tokenizers") and loc[2] in TOKENIZER_KINDS:
            del loc[2]  # the kind pydantic chose (the block's `model`), not a key of the block
        key = ".".join(str(p) for p in loc)
        if not e["loc"]:  # a check across sections: the message names the keys
            lines.append(f"  {e['msg'].removeprefix('Value error, ')}")
        elif e["type"] == "union_tag_invalid" and loc[:1] in (["tokenizers"], ["more_tokenizers"]):
            lines.append(f"  {key}.model: unknown tokenizer kind {e['ctx']['tag']!r}; known kinds: "
                         f"{', '.join(sorted(TOKENIZER_KINDS))} (adding one: docs/adding_a_tokenizer.md)")
        elif e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (check its spelling against params.yaml's comments)")
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: not found (run the stage from the repository root)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    return params_from_dict(raw, path)


# Sections whose blocks may name another block to start from (``extends``).
INHERITING_SECTIONS = ("tokenizers", "more_tokenizers", "methods", "more_methods")
# The sections dvc.yaml makes stages of: a stage's params are its own block and the one defaults block it extends
# (``${item.extends}``), so their blocks extend a defaults block directly, never a chain DVC could not follow.
DAG_SECTIONS = ("tokenizers", "methods")


def deep_merge(base: dict, override: dict) -> dict:
    """``override`` on top of ``base``: nested mappings merge key by key, any other value replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else copy.deepcopy(value)
    return out


def resolve_extends(raw: dict, path: str | Path = "params.yaml") -> dict:
    """A copy of ``raw`` in which every block of :data:`INHERITING_SECTIONS` that names ``extends: <section>.<name>``
    is that block's settings merged over its own keys (:func:`deep_merge`), ``extends`` removed.

    There are no YAML anchors in params.yaml: DVC's ``dvc exp run -S`` writes the file back through a YAML
    round trip that expands aliases, so an aliased block kept the old value. With ``extends`` every key a user sees
    is one setting, and ``-S`` on it changes exactly the stages that read it."""
    out = copy.deepcopy(raw)
    defaults = out.get("defaults") or {}
    if not isinstance(defaults, dict) or any(not isinstance(v, dict) for v in defaults.values()):
        raise ParamsError(f"{path}: defaults: expected a mapping of named blocks, each a mapping of settings")
    done: dict[tuple[str, str], dict] = {}

    def resolve(section: str, name: str, chain: tuple[str, ...]) -> dict:
        if (section, name) in done:
            return done[(section, name)]
        block = out[section][name]
        where = f"{section}.{name}"
        if not isinstance(block, dict) or "extends" not in block:
            return block
        parent = block["extends"]
        if not isinstance(parent, str) or parent.count(".") != 1:
            raise ParamsError(f"{path}: {where}.extends: expected <section>.<block>, e.g. defaults.generative "
                              f"(got {parent!r})")
        if parent in chain:
            raise ParamsError(f"{path}: {where}.extends: a cycle ({' -> '.join((*chain, parent))})")
        parent_section, parent_name = parent.split(".")
        if section in DAG_SECTIONS and parent_section != "defaults":
            raise ParamsError(f"{path}: {where}.extends: {parent}: a block of {section} extends a block of defaults "
                              f"(dvc.yaml tracks that one block as the stage's parameters); copy the keys you need")
        container = defaults if parent_section == "defaults" else (out.get(parent_section) or {})
        if parent_section not in ("defaults", *INHERITING_SECTIONS) or parent_name not in container:
            known = sorted(f"defaults.{n}" for n in defaults)
            raise ParamsError(f"{path}: {where}.extends: no block {parent} (defaults blocks: {known})")
        base = container[parent_name] if parent_section == "defaults" \
            else resolve(parent_section, parent_name, (*chain, parent))
        merged = deep_merge(base, {k: v for k, v in block.items() if k != "extends"})
        done[(section, name)] = merged
        return merged

    for section in INHERITING_SECTIONS:
        blocks = out.get(section)
        if isinstance(blocks, dict):
            for name in list(blocks):
                blocks[name] = resolve(section, name, (f"{section}.{name}",))
    return out


def params_from_dict(raw: dict, path: str | Path = "params.yaml") -> Params:
    raw = resolve_extends(raw, path)
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(_format_error(Path(path), exc)) from None


# A number YAML 1.1 reads as a string (no dot before the exponent) and Hydra, behind `dvc exp run -S`, as a float.
_FLOAT_WITHOUT_DOT = re.compile(r"[-+]?(\d[\d_]*|\d*\.\d+)[eE][-+]?\d+|[-+]?(inf|nan)", re.IGNORECASE)


def _override_value(assignment: str, text: str):
    if not text:
        return ""  # `key=` sets the empty string, as Hydra does
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{assignment!r}: the value is not YAML ({str(exc).splitlines()[0]})") from None
    return float(text.replace("_", "")) if isinstance(value, str) and _FLOAT_WITHOUT_DOT.fullmatch(text) else value


def set_dotted(raw: dict, assignment: str) -> None:
    """Apply one assignment to a params mapping in the override grammar of `dvc exp run -S` (Hydra's): ``key=value``
    sets a key params.yaml has, ``+key=value`` adds one it lacks, ``++key=value`` sets or adds. ``key`` is dotted
    from the top of params.yaml (``defaults.generative.train.epochs``, ``methods.tiger.seed``); ``value`` is YAML.
    A key that does not fit stops with a one-line message naming it."""
    target, sep, text = assignment.partition("=")
    mode = "++" if target.startswith("++") else "+" if target.startswith("+") else ""
    key = target[len(mode):]
    parts = key.split(".")
    if not sep or "" in parts:
        raise ParamsError(f"{assignment!r}: expected KEY=VALUE with a dotted params.yaml key, e.g. "
                          "defaults.generative.train.epochs=2 (`dvc exp run -S` syntax)")
    node = raw
    for depth, part in enumerate(parts):
        if part not in node and not mode:
            raise ParamsError(f"{assignment!r}: params.yaml has no key {'.'.join(parts[:depth + 1])}; add one "
                              f"with '++{key}={text}' (the `dvc exp run -S` syntax)")
        if depth == len(parts) - 1:
            break
        if mode and node.get(part) is None:
            node[part] = {}  # `+` and `++` add below a missing or null key, as Hydra does
        node = node[part]
        if not isinstance(node, dict):
            raise ParamsError(f"{assignment!r}: {'.'.join(parts[:depth + 1])} is a value, not a mapping of keys")
    leaf = parts[-1]
    if mode == "+" and node.get(leaf) is not None:  # Hydra lets `+` fill a null key
        raise ParamsError(f"{assignment!r}: params.yaml already has {key}; set it with '{key}={text}'")
    node[leaf] = _override_value(assignment, text)


def apply_overrides(raw: dict, assignments: list[str]) -> dict:
    """A copy of the params mapping ``raw`` with every assignment applied in order (:func:`set_dotted`)."""
    out = copy.deepcopy(raw)
    for assignment in assignments:
        set_dotted(out, assignment)
    return out
