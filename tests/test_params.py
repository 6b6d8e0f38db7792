"""params.yaml is validated as a whole (tokenizers, methods, evaluate, report), and dvc.yaml names the paths
of pipeline/paths.py."""
from pathlib import Path

import pytest
import yaml

from pipeline import paths
from pipeline.config import ParamsError, load_params, params_from_dict
from pipeline.models.base import READS_TOKENIZER, ModelInputs
from pipeline.models.registry import MODELS, model_class

REPO = Path(__file__).resolve().parents[1]
TIGER = {"model": "tiger", "inputs": ["data/processed/semantic_ids/rqvae"]}


@pytest.mark.parametrize("raw, message", [
    ({"methods": {"tiger": {**TIGER, "bakbone": {}}}}, r"methods.tiger.bakbone: unknown key"),
    ({"methods": {"tiger": {**TIGER, "train": {"epoch": 3}}}}, r"methods.tiger.train.epoch: unknown key"),
    ({"methods": {"tiger": {**TIGER, "train": {"precision": "fp16"}}}},
     r"methods.tiger.train.precision: Input should be"),
    ({"methods": {"tiger": {"model": "tiger"}}}, r"methods.tiger.inputs: Field required"),
    ({"methods": {"tiger": {**TIGER, "inputs": ["data/processed/semantic_ids/letter"]}}},
     r"methods.tiger.inputs: data/processed/semantic_ids/letter is the IDs of tokenizer 'letter', which has no block"),
    ({"methods": {"tiger": {**TIGER, "inputs": ["a", "b", "c"]}}}, r"methods.tiger.inputs: List should have at most 2"),
    ({"tokenizers": {"rqvae": {"model": "rqvae", "codebook_size": 1}}}, r"tokenizers.rqvae.codebook_size"),
    ({"tokenizers": {"rq vae": {"model": "rqvae"}}}, r"tokenizers.rq vae: a block name may hold"),
    ({"tokenizers": {"letter": {"model": "letter", "inputs": ["text.npy"]}}},
     r"tokenizers.letter.*inputs: List should have at least 2"),
    ({"tokenizers": {"letter": {"model": "letter", "collaborative_weight": -1}}},
     r"tokenizers.letter.*collaborative_weight"),
    ({"tokenizers": {"x": {"model": "vqvae"}}},
     r"tokenizers.x.model: unknown tokenizer kind .vqvae.; known kinds: external, letter, rqvae"),
    ({"evaluate": {"beam": 20}}, r"evaluate.beam: unknown key"),
    ({"report": {"baseline": "tiger", "extra": 1}}, r"report.extra: unknown key"),
    ({"tokenize": {"epochs": 3}}, r"tokenize: unknown key"),  # the section before tokenizers: named, not ignored
    ({"methods": {"t": TIGER}, "more_methods": {"t": TIGER}}, r"\['t'\]: defined in both methods and more_methods"),
    ({"more_methods": {"t": {**TIGER, "inputs": ["data/processed/semantic_ids/nope"]}}},
     r"more_methods.t.inputs: .* tokenizer 'nope'"),
])
def test_bad_sections_stop_with_the_key_named(raw, message):
    with pytest.raises(ParamsError, match=message):
        params_from_dict(raw)


def test_every_method_of_params_yaml_builds_its_config():
    params = load_params(REPO / "params.yaml")
    for name, block in {**params.methods, **params.more_methods}.items():
        cls = model_class(block.model, f"methods.{name}")
        inputs = ModelInputs(n_items=10, codebook_size=4)
        if cls.reads:
            import torch

            inputs.item_codes = torch.zeros(10, 4, dtype=torch.long)
        if READS_TOKENIZER in cls.reads:  # a tokenizer of 3 levels of 4 codes behind those IDs
            from pipeline.tokenizers.rqvae import RQVAE, RQVAEConfig

            inputs.tokenizer = RQVAE(RQVAEConfig(in_dim=8, hidden=(8,), code_dim=4, levels=3, codebook_size=4))
        config = cls.config_class.from_dict({**cls.sizes(inputs, params.filter.max_history), **block.backbone})
        assert config.n_items == 10, name
    assert set(MODELS) >= {block.model for block in {**params.methods, **params.more_methods}.values()}


def test_the_ablation_rows_are_decors_block_with_their_switches_only():
    params = load_params(REPO / "params.yaml")
    decor = params.method("decor").model_dump()
    switches = {"decor_composition": {"fusion": False, "bos_queries": 0},
                "decor_composition_bos": {"fusion": False},
                "decor_fusion": {"composition": False, "bos_queries": 0},
                "decor_fusion_composition": {"bos_queries": 0}}
    for row, changed in switches.items():
        expected = {**decor, "backbone": {**decor["backbone"], **changed}}
        assert params.method(row).model_dump() == expected, row
    every = {**params.methods, **params.more_methods}
    generative = [m for m in every.values() if m.model in ("tiger", "decor", "discrec", "etegrec")]
    assert len({m.train for m in generative}) == 1  # one budget for every generative row
    assert params.method("tiger_e32").tokenizer == "rqvae_e32" and params.tokenizer("rqvae_e32").code_dim == 32
    assert params.tokenizer("rqvae_e32").model_copy(update={"code_dim": 128}) == params.tokenizer("rqvae")
    # LETTER is the RQ-VAE in LETTER's shape (4 levels, e = 32) plus its regularisers (and its second input), and
    # DiscRec's rows differ in their switch
    letter = params.tokenizers["letter"].model_dump()
    shape = {"levels": 4, "code_dim": 32}
    assert {k: letter[k] for k in shape} == shape
    assert {k: v for k, v in letter.items()
            if k in params.tokenizers["rqvae"].model_dump() and k not in ("model", "inputs")} \
        == {k: v for k, v in params.tokenizers["rqvae"].model_dump().items() if k not in ("model", "inputs")} | shape
    assert params.method("letter").tokenizer == "letter" and params.method("discrec_l").tokenizer == "letter"
    assert params.method("discrec_t").tokenizer == "rqvae"
    discrec = params.method("discrec_t").model_dump()
    for row, changed in {"discrec_t_no_ipe": {"item_positions": False},
                         "discrec_t_no_tf": {"localized_transformer": False},
                         "discrec_t_no_gate": {"fusion": "sum"}}.items():
        assert params.method(row).model_dump() == {**discrec, "backbone": {**discrec["backbone"], **changed}}, row


def test_dvc_yaml_names_the_folders_of_pipeline_paths():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    # the data folders each stage writes (its records under reports/ are outputs too, not cached)
    outs = lambda stage: [o for o in (next(iter(o)) if isinstance(o, dict) else o for o in stage["outs"])  # noqa: E731
                          if not o.startswith("reports/")]
    assert outs(stages["download"]) == [str(paths.RAW_DIR)]
    assert str(paths.SEQUENCES_DIR) in outs(stages["filter"])
    assert outs(stages["embed"]) == [str(paths.EMBEDDINGS_DIR)]
    assert outs(stages["tokenize"]["do"]) == [str(paths.tokenizer_dir("${key}"))]
    assert outs(stages["semantic_ids"]["do"]) == [str(paths.semantic_ids_dir("${key}"))]
    assert outs(stages["train"]["do"]) == [str(paths.model_dir("${key}"))]
    assert outs(stages["evaluate"]["do"]) == [str(paths.results_dir("${key}"))]
    assert str(paths.tokenizer_dir("${key}")) in stages["semantic_ids"]["do"]["deps"]
    assert str(paths.model_dir("${key}")) in stages["evaluate"]["do"]["deps"]
    # evaluate reads the model folder alone: no methods.<name> params (cpu_threads: its bytes depend on it)
    assert stages["evaluate"]["do"]["params"] == ["cpu_threads", "evaluate"]


def test_a_tokenizer_outside_the_default_dag_serves_more_methods_only():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    params = params_from_dict(raw)
    assert "rqvae_e32" not in params.tokenizers and params.tokenizer("rqvae_e32").code_dim == 32
    assert params.method("tiger_e32").tokenizer == "rqvae_e32"  # a more_methods row reads it
    # a default method cannot: the DAG would not make its IDs
    tiger_e32 = {**raw["methods"]["tiger"], **raw["more_methods"]["tiger_e32"], "extends": "defaults.generative"}
    moved = {**raw, "methods": {**raw["methods"], "tiger_e32": tiger_e32},
             "more_methods": {k: v for k, v in raw["more_methods"].items() if k != "tiger_e32"}}
    with pytest.raises(ParamsError, match="rqvae_e32.*more_tokenizers: move it under tokenizers"):
        params_from_dict(moved)
    rqvae_e32 = {**raw["tokenizers"]["rqvae"], **raw["more_tokenizers"]["rqvae_e32"],
                 "extends": "defaults.rq_tokenizer"}
    both = {**raw, "tokenizers": {**raw["tokenizers"], "rqvae_e32": rqvae_e32}}
    with pytest.raises(ParamsError, match="defined in both tokenizers and more_tokenizers"):
        params_from_dict(both)
    with pytest.raises(ParamsError, match="no block tokenizers.nope.*more_tokenizers"):
        params.tokenizer("nope")
