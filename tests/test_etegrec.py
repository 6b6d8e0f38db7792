"""ETEGRec: TIGER when its additions are off, IDs re-derived unique after each tokenizer epoch and followed by the
decoder, the phases of its alternating optimisation, a model folder holding the final IDs and tokenizer, and a
killed run resuming in the right phase with the right IDs."""
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from pipeline import paths
from pipeline.evaluation.evaluate import evaluate_model
from pipeline.models.etegrec.model import Etegrec, tokenizer_from_folder
from pipeline.models.folder import load_model
from pipeline.tokenizers.rqvae import load_rqvae
from pipeline.tokenizers.semantic_ids import assert_unique, read_id_table
from pipeline.training.method import build_method, train_method
from tests.conftest import N_ITEMS, TINY_T5, TINY_TRAIN
from tests.test_model_folder import quiet, rqvae, run_tokenizer

IDS, TOKENIZER = "data/processed/semantic_ids/rq", "data/processed/tokenizers/rq"


def etegrec_block(train=None, **switches) -> dict:
    return {"model": "etegrec", "inputs": [IDS, TOKENIZER], "backbone": {**TINY_T5, **switches},
            "train": {**TINY_TRAIN, **(train or {})}}


def setup(workspace, methods: dict, tokenizer_epochs: int = 20):
    """Text vectors, a trained RQ-VAE (3 levels of 8 codes) and its IDs, and params with ``methods``."""
    workspace.write_embeddings()
    params = workspace.params(methods, {"rq": rqvae(levels=3, epochs=tokenizer_epochs)})
    run_tokenizer(params, "rq")
    return params


def test_without_alignment_and_with_a_frozen_tokenizer_etegrec_trains_exactly_as_tiger(workspace):
    train = {"epochs": 3, "weight_decay": 0.05}
    tiger = {"model": "tiger", "inputs": [IDS], "backbone": {**TINY_T5, "dropout": 0.1},
             "train": {**TINY_TRAIN, **train}}
    ete = etegrec_block(train, dropout=0.1, sia_weight=0.0, psa_weight=0.0, end_to_end=False)
    params = setup(workspace, {"tiger": tiger, "etegrec": ete})
    _, tiger_history = train_method(params, "tiger", paths.model_dir("tiger"), log=quiet)
    _, ete_history = train_method(params, "etegrec", paths.model_dir("etegrec"), log=quiet)
    # the same losses bit for bit (dropout on: the same random draws too), the same validation
    assert [r["train_loss"] for r in ete_history] == [r["train_loss"] for r in tiger_history]
    assert [r["valid_ndcg@10"] for r in ete_history] == [r["valid_ndcg@10"] for r in tiger_history]
    assert not any("ids_changed" in r for r in ete_history)  # frozen from the start: never re-derived
    tiger_w, ete_w = (load_file(str(paths.model_dir(m) / "best.safetensors")) for m in ("tiger", "etegrec"))
    assert all(torch.equal(tiger_w[k], ete_w[k]) for k in tiger_w)
    # the tokenizer it started from, untouched
    start = load_rqvae(paths.tokenizer_dir("rq")).state_dict()
    assert all(torch.equal(start[k], ete_w[f"tokenizer.{k}"]) for k in start)


def test_an_untouched_tokenizer_re_derives_exactly_the_ids_it_started_from(workspace):
    """The semantic_ids stage and ETEGRec's re-derivation are one function of one tokenizer: before any
    training they agree on every item, so a change after a tokenizer epoch is the epoch's doing."""
    params = setup(workspace, {"etegrec": etegrec_block()})
    model, _ = build_method(params, "etegrec")
    start = read_id_table(paths.semantic_ids_dir("rq") / "ids.parquet")
    assert np.array_equal(model.ids.numpy(), start)
    assert np.array_equal(model.derive_ids(), start)
    assert model.refresh_ids()["ids_changed"] == 0.0


def test_at_tokenizer_lr_0_a_tokenizer_epoch_moves_no_weight_and_no_id(workspace):
    """The control of the churn measurement: with the tokenizer's learning rate 0 (weight decay on, codebooks
    included) a real tokenizer epoch of the trainer changes 0 % of the IDs."""
    block = etegrec_block({"epochs": 2, "lr": 0.01, "weight_decay": 0.05}, tokenizer_lr=0.0,
                          codebook_weight_decay=0.05, freeze_below=0.0, tokenizer_precision="train")
    params = setup(workspace, {"etegrec": block})
    _, history = train_method(params, "etegrec", paths.model_dir("etegrec"), log=quiet)
    assert history[0]["phase"] == "tokenizer" and history[0]["ids_changed"] == 0.0
    start = load_rqvae(paths.tokenizer_dir("rq")).state_dict()
    trained = load_file(str(paths.model_dir("etegrec") / "last" / "model.safetensors"))
    assert all(torch.equal(start[k], trained[f"tokenizer.{k}"]) for k in start)


def test_the_codebook_decay_and_the_tokenizer_precision_are_what_the_block_says(workspace):
    from pipeline.data.splits import load_splits
    from pipeline.training.trainer import Trainer

    params = setup(workspace, {"etegrec": etegrec_block({"weight_decay": 0.05}, codebook_weight_decay=0.01)})
    model, _ = build_method(params, "etegrec")
    splits = load_splits(paths.SEQUENCES_DIR)
    trainer = Trainer(model, splits["train"], splits["valid"], params.method("etegrec").train, "out", seed=0,
                      device="cpu", log=quiet)
    group = next(g for g in trainer.optimizer.param_groups if any(p is model.tokenizer.codebooks for p in g["params"]))
    assert group["weight_decay"] == 0.01 and group["params"] == [model.tokenizer.codebooks]
    others = [g for g in trainer.optimizer.param_groups
              if any(p is model.tokenizer.encoder[0].weight for p in g["params"])]
    assert others[0]["weight_decay"] == 0.05  # the rest of the tokenizer: the paper's 0.05
    vectors = model.item_vectors[:4]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model._quantise(vectors)["r"].dtype == torch.float32  # fp32 (the block's default)
        model.config.tokenizer_precision = "train"
        assert model._quantise(vectors)["r"].dtype == torch.bfloat16


def check_ids_after_each_tokenizer_epoch(model: Etegrec, valid, seen: list):
    """Wrap ``end_of_epoch``: after each re-derivation the IDs are unique, the decoder's table is the new one,
    and the beam's scores are the teacher-forced log-probabilities of the items it names under the new IDs."""
    from tests.test_tiger import every_item_log_probability

    inner = model.end_of_epoch

    def end_of_epoch(epoch, phase):
        before = model.ids.clone()
        inner(epoch, phase)
        if phase.name in ("recommender", "finetune"):
            assert torch.equal(model.ids, before)  # a recommender epoch keeps the IDs
            return
        assert_unique(model.ids.numpy())
        assert torch.equal(model.item_codes, model.ids)
        was_training = model.training
        model.eval()
        batch = model.make_batch(valid, np.arange(3), "cpu")
        items, scores = model.beam_search(batch, beam_size=N_ITEMS)
        for row in range(3):
            assert sorted(items[row].tolist()) == list(range(N_ITEMS))  # every item once, no other
            logp = every_item_log_probability(model, batch, row)
            assert torch.allclose(logp[items[row]], scores[row], atol=1e-4)
        model.train(was_training)
        seen.append((epoch, phase.name, float((model.ids != before).any(1).float().mean())))

    model.end_of_epoch = end_of_epoch


@pytest.mark.parametrize("alternating", [True, False])
def test_ids_are_rederived_unique_after_each_tokenizer_epoch_and_the_decoder_follows_them(workspace, alternating):
    from pipeline.data.splits import load_splits
    from pipeline.training.trainer import Trainer

    # a tokenizer learning rate high enough that IDs move in a few steps; never frozen early
    block = etegrec_block({"epochs": 6, "lr": 0.01}, tokenizer_lr=0.01, freeze_below=0.0, tokenizer_cycles=2,
                          alternating=alternating)
    params = setup(workspace, {"etegrec": block})
    torch.manual_seed(0)
    model, _ = build_method(params, "etegrec")
    splits = load_splits(paths.SEQUENCES_DIR)
    seen = []
    check_ids_after_each_tokenizer_epoch(model, splits["valid"], seen)
    trainer = Trainer(model, splits["train"], splits["valid"], params.method("etegrec").train, "out", seed=0,
                      device="cpu", log=quiet)
    trainer.fit()
    tokenizer_phase = "tokenizer" if alternating else "joint"
    assert [r["phase"] for r in trainer.history] == (
        ["tokenizer", "recommender"] * 2 + ["finetune"] * 2 if alternating else ["joint"] * 4 + ["finetune"] * 2)
    assert [(e, p) for e, p, _ in seen] == [(e, tokenizer_phase) for e in ([1, 3] if alternating else [1, 2, 3, 4])]
    assert max(share for *_, share in seen) > 0  # the IDs did move: the checks above were not vacuous
    logged = [r for r in trainer.history if "ids_changed" in r]
    assert [r["ids_changed"] for r in logged] == pytest.approx([share for *_, share in seen])
    assert all({"utilisation_l1", "collision_rate", "loss_sq", "loss_sia", "loss_psa"} <= set(r) for r in logged)
    assert all("loss_rec" in r for r in trainer.history if r["phase"] != "tokenizer")


def test_the_tokenizer_is_frozen_once_its_ids_stop_changing(workspace):
    from pipeline.data.splits import load_splits
    from pipeline.training.trainer import Trainer

    # freeze_below above any share: the first re-derivation freezes it, later tokenizer epochs train the recommender
    params = setup(workspace, {"etegrec": etegrec_block({"epochs": 5}, freeze_below=1.01, tokenizer_cycles=2)})
    torch.manual_seed(0)
    model, _ = build_method(params, "etegrec")
    splits = load_splits(paths.SEQUENCES_DIR)
    trainer = Trainer(model, splits["train"], splits["valid"], params.method("etegrec").train, "out", seed=0,
                      device="cpu", log=quiet)
    tokenizer = {k: v.clone() for k, v in model.tokenizer.state_dict().items()}
    trainer.train_epoch()
    trainer.epoch += 1
    model.end_of_epoch(1, trainer.phase_at(0))
    assert bool(model.tokenizer_frozen)
    trained = {k: v.clone() for k, v in model.tokenizer.state_dict().items()}
    assert any(not torch.equal(tokenizer[k], trained[k]) for k in tokenizer)  # the first tokenizer epoch ran
    assert trainer.phase_at(2).name == "tokenizer" and model.current_phase(trainer.phase_at(2)).name == "recommender"
    for _ in range(2):
        trainer.train_epoch()
        trainer.epoch += 1
    assert all(torch.equal(trained[k], v) for k, v in model.tokenizer.state_dict().items())


def test_the_finetuning_phase_freezes_the_tokenizer_starts_a_fresh_optimizer_and_trains_on_l_rec(workspace):
    from pipeline.data.splits import load_splits
    from pipeline.training.trainer import Trainer

    params = setup(workspace, {"etegrec": etegrec_block({"epochs": 5, "lr": 0.01}, tokenizer_lr=0.01, freeze_below=0.0,
                                                        tokenizer_cycles=1, finetune_lr=0.002)})
    torch.manual_seed(0)
    model, _ = build_method(params, "etegrec")
    splits = load_splits(paths.SEQUENCES_DIR)
    trainer = Trainer(model, splits["train"], splits["valid"], params.method("etegrec").train, "out", seed=0,
                      device="cpu", log=quiet)
    assert [trainer.phase_at(e).name for e in range(5)] == ["tokenizer", "recommender"] + ["finetune"] * 3
    cycles_optimizer, seen = trainer.optimizer, {}
    begin = trainer.begin_restart

    def begin_restart(phase, best_path):
        begin(phase, best_path)
        seen["optimizer"], seen["tokenizer"] = trainer.optimizer, {k: v.clone() for k, v in
                                                                   model.tokenizer.state_dict().items()}
        seen["ids"] = model.ids.clone()

    trainer.begin_restart = begin_restart
    trainer.fit()
    assert seen["optimizer"] is not cycles_optimizer and trainer.restarted_at == 2
    # every group of the fresh AdamW at the fine-tuning rate (the tokenizer's own rate is gone), no warm-up
    assert {g["initial_lr"] for g in seen["optimizer"].param_groups} == {0.002}
    assert 0 < trainer.history[2]["lr"] < 0.002
    assert all(torch.equal(seen["tokenizer"][k], v) for k, v in model.tokenizer.state_dict().items())
    assert torch.equal(model.ids, seen["ids"]) and bool(model.tokenizer_frozen)
    finetuned = [r for r in trainer.history if r["phase"] == "finetune"]
    assert all("loss_rec" in r and "loss_sia" not in r and "loss_psa" not in r for r in finetuned)
    assert all("loss_sia" in r and "loss_psa" in r for r in trainer.history[:2])


def test_the_model_folder_holds_the_final_ids_codebooks_and_tokenizer_and_evaluation_uses_them(workspace):
    params = setup(workspace, {"etegrec": etegrec_block({"epochs": 4, "lr": 0.01}, tokenizer_lr=0.01,
                                                        freeze_below=0.0)})
    start_ids = read_id_table(paths.semantic_ids_dir("rq") / "ids.parquet")
    folder = paths.model_dir("etegrec")
    summary, history = train_method(params, "etegrec", folder, log=quiet)
    best = load_file(str(folder / "best.safetensors"))
    ids = read_id_table(folder / "semantic_ids.parquet")
    assert np.array_equal(ids, best["ids"].numpy())  # the IDs the selected weights were trained with
    assert not np.array_equal(ids, start_ids) or summary["best_epoch"] == 0
    assert torch.equal(load_file(str(folder / "codebooks.safetensors"))["codebooks"], best["tokenizer.codebooks"])
    assert torch.equal(tokenizer_from_folder(folder).codebooks.detach(), best["tokenizer.codebooks"])
    model, info = load_model(folder)
    assert info["model"] == "etegrec" and np.array_equal(model.item_codes.numpy(), ids)
    result = evaluate_model(folder, paths.results_dir("etegrec"), params.evaluate, log=quiet)
    assert result["invalid@10"] == 0


class Interrupt(Exception):
    pass


def test_a_killed_run_resumes_in_the_right_phase_with_the_right_ids(workspace):
    params = setup(workspace, {"etegrec": etegrec_block({"epochs": 4, "lr": 0.01}, tokenizer_lr=0.01,
                                                        freeze_below=0.0)})

    def run(folder, stop_at=None):
        def on_epoch(epoch, row):
            if epoch == stop_at:  # killed before epoch ``stop_at``'s checkpoint: it resumes after the one before
                raise Interrupt

        return train_method(params, "etegrec", folder, log=quiet, on_epoch=on_epoch)[1]

    straight = run(paths.MODELS_DIR / "straight")
    with pytest.raises(Interrupt):
        run(paths.MODELS_DIR / "killed", stop_at=2)  # after the tokenizer epoch re-derived the IDs
    state = load_file(str(paths.MODELS_DIR / "killed/last/model.safetensors"))
    assert not torch.equal(state["ids"], torch.as_tensor(read_id_table(paths.semantic_ids_dir("rq") / "ids.parquet")))
    resumed = run(paths.MODELS_DIR / "killed")
    assert [r["phase"] for r in resumed] == [r["phase"] for r in straight] == \
        ["tokenizer", "recommender", "tokenizer", "recommender"]
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in straight]
    assert [r.get("ids_changed") for r in resumed] == [r.get("ids_changed") for r in straight]
    a, b = (load_file(str(paths.MODELS_DIR / f / "last/model.safetensors")) for f in ("straight", "killed"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_table_4_rows_of_params_yaml_differ_from_etegrec_only_in_their_switch():
    from pipeline.config import load_params

    params = load_params(paths.Path(__file__).resolve().parents[1] / "params.yaml")
    base = params.method("etegrec").backbone
    rows = {"etegrec_no_sia": {"sia_weight": 0.0}, "etegrec_no_psa": {"psa_weight": 0.0},
            "etegrec_no_alignment": {"sia_weight": 0.0, "psa_weight": 0.0},
            "etegrec_joint": {"alternating": False}, "etegrec_frozen_tokenizer": {"end_to_end": False}}
    for name, switch in rows.items():
        block = params.method(name)
        assert block.backbone == {**base, **switch}, name
        assert block.train == params.method("etegrec").train == params.method("tiger").train
        assert block.inputs == params.method("etegrec").inputs
    assert base["sia_weight"] == 3e-4 and base["psa_weight"] == 1e-4  # the paper's best (§5.5)
    assert yaml.safe_load("x: 3e-4")["x"] == "3e-4"  # why params.yaml spells them 0.0003 and 0.0001


def test_the_tokenizer_may_read_sasrecs_item_embeddings_and_a_mismatched_tokenizer_is_refused(workspace):
    from safetensors.torch import save_file

    from pipeline.config import ParamsError

    workspace.write_embeddings()
    sasrec = paths.model_dir("sasrec") / "item_embeddings.safetensors"
    sasrec.parent.mkdir(parents=True)
    save_file({"item_embeddings": torch.randn(N_ITEMS, 12, generator=torch.Generator().manual_seed(0))}, str(sasrec))
    block = etegrec_block()
    block["inputs"] = ["data/processed/semantic_ids/sas", "data/processed/tokenizers/sas"]
    params = workspace.params({"etegrec": block, "mixed": {**block, "inputs": [IDS, "data/processed/tokenizers/sas"]}},
                              {"sas": rqvae(levels=3, inputs=[str(sasrec)]), "rq": rqvae(levels=3)})
    run_tokenizer(params, "sas")
    run_tokenizer(params, "rq")
    model, data = build_method(params, "etegrec")
    assert model.config.tokenizer["in_dim"] == 12
    assert torch.equal(model.item_vectors, load_file(str(sasrec))["item_embeddings"])
    with pytest.raises(ParamsError, match="tokenizers/sas.*is not the tokenizer of the IDs"):
        build_method(params, "mixed")


def test_a_learning_rate_written_5e_5_is_a_number_and_a_word_is_refused():
    from pipeline.models.etegrec.model import EtegrecConfig

    config = EtegrecConfig.from_dict({"n_items": 4, "depth": 4, "codebook_size": 8, "tokenizer_lr": "5e-5"})
    assert config.tokenizer_lr == 5e-5
    with pytest.raises(ValueError, match="sia_weight: Input should be a valid number.*got 'high'"):
        EtegrecConfig.from_dict({"n_items": 4, "depth": 4, "codebook_size": 8, "sia_weight": "high"})
