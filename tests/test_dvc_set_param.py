"""`dvc exp run -S key=value`, the real command, sets exactly the key it names in params.yaml: a method's seed, a
method's epochs and a family-wide key (a `defaults` block) each change the parameters of exactly the stages that
read them, and params.yaml keeps its comments. A copy of the project's params.yaml and dvc.yaml in a
temporary git repository; `--queue` writes the experiment's params.yaml into a stash commit without running it."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import params_from_dict

REPO = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]
GENERATIVE = {"tiger", "decor", "etegrec", "letter", "discrec_t", "discrec_l"}


def run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{cmd}: {result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name in ("params.yaml", "dvc.yaml", ".dvc/config"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    run(["git", "init", "-q"], tmp_path)
    run(["git", "add", "-A"], tmp_path)
    run(["git", "commit", "-qm", "params"], tmp_path)
    return tmp_path


def stage_params(repo: Path) -> dict[str, dict]:
    """Per stage of the DAG, the values of the parameters it depends on, as DVC itself resolves dvc.yaml (its
    `foreach` items and `${item.extends}`) and reads params.yaml: what `dvc status` compares with dvc.lock."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        return {stage.name: {k: v for dep in stage.deps if isinstance(dep, ParamsDependency)
                                   for k, v in dep.read_params().items()}
                for stage in dvc.index.stages}


def queued_params(repo: Path, *assignments: str) -> str:
    """params.yaml as `dvc exp run --queue -S ...` wrote it for the experiment."""
    cmd = DVC + ["exp", "run", "--queue"]
    for assignment in assignments:
        cmd += ["-S", assignment]
    run(cmd, repo)
    return run(["git", "show", "refs/exps/celery/stash:params.yaml"], repo)


def comments(text: str) -> list[str]:
    return [line[line.index("#"):].strip() for line in text.splitlines() if "#" in line]


@pytest.mark.parametrize("assignment, key, value, stages", [
    # a method's seed: that method's training and the report that states it
    ("methods.tiger.seed=7", ("methods", "tiger", "seed"), 7, {"train@tiger", "report"}),
    # a method's epochs, where its block has a train section of its own...
    ("methods.sasrec.train.epochs=20", ("methods", "sasrec", "train", "epochs"), 20, {"train@sasrec", "report"}),
    # ...and where it takes its family's (`++` adds the key to the method's block: Hydra's override grammar)
    ("++methods.tiger.train.epochs=20", ("methods", "tiger", "train", "epochs"), 20, {"train@tiger", "report"}),
    # a family-wide key: every generative method, not the baselines
    ("defaults.generative.train.epochs=20", ("methods", "decor", "train", "epochs"), 20,
     {f"train@{m}" for m in GENERATIVE} | {"report"}),
    ("defaults.generative.backbone.num_layers=4", ("methods", "letter", "backbone", "num_layers"), 4,
     {f"train@{m}" for m in GENERATIVE} | {"report"}),
    # the tokenizers' family: both tokenizers, not the semantic-ID stages (they read only the block's inputs)
    ("defaults.rq_tokenizer.epochs=400", ("tokenizers", "letter", "epochs"), 400,
     {"tokenize@rqvae", "tokenize@letter"}),
])
def test_dvc_exp_run_set_param_changes_exactly_its_stages(project, assignment, key, value, stages):
    before = stage_params(project)
    original = (project / "params.yaml").read_text()
    written = queued_params(project, assignment)
    assert comments(written) == comments(original), "dvc exp run -S dropped or moved comments of params.yaml"
    raw = yaml.safe_load(written)
    settings = params_from_dict(raw).model_dump()
    for part in key:
        settings = settings[part]
    assert settings == value, f"{assignment}: the experiment's settings have {key} = {settings}"
    # every other setting is as before
    others = yaml.safe_load(original)
    assert params_from_dict(others).model_dump(exclude={"defaults"}).keys() == \
        params_from_dict(raw).model_dump(exclude={"defaults"}).keys()
    (project / "params.yaml").write_text(written)
    after = stage_params(project)
    assert after.keys() == before.keys()
    changed = {stage for stage in after if after[stage] != before[stage]}
    assert changed == stages, f"{assignment}: params changed for {sorted(changed)}, expected {sorted(stages)}"


def test_a_method_block_without_extends_is_refused_by_name():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["tokenizers"]["letter"]["extends"] = "tokenizers.rqvae"
    with pytest.raises(ValueError, match=r"tokenizers.letter.extends: tokenizers.rqvae: a block of tokenizers "
                                         r"extends a block of defaults"):
        params_from_dict(raw)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["more_methods"]["tiger_e32"]["extends"] = "defaults.nope"
    with pytest.raises(ValueError, match=r"more_methods.tiger_e32.extends: no block defaults.nope"):
        params_from_dict(raw)
    raw["more_methods"]["tiger_e32"]["extends"] = "more_methods.tiger_deeper"
    raw["more_methods"]["tiger_deeper"]["extends"] = "more_methods.tiger_e32"
    with pytest.raises(ValueError, match=r"a cycle"):
        params_from_dict(raw)


def test_the_paper_settings_experiment_holds_the_papers_sizes(project):
    """scripts/paper_settings.py's assignments through the real `dvc exp run -S` (the `++` ones included)."""
    sys.path.insert(0, str(REPO / "scripts"))
    import paper_settings

    params = params_from_dict(yaml.safe_load(queued_params(project, *paper_settings.overrides())))
    tiger, etegrec = params.method("tiger"), params.method("etegrec")
    assert (tiger.backbone["num_layers"], tiger.backbone["num_heads"], tiger.backbone["d_ff"]) == (4, 6, 1024)
    assert (etegrec.backbone["num_layers"], etegrec.backbone["d_ff"]) == (6, 512)
    assert params.method("decor").backbone["num_layers"] == 4 and params.method("decor").train.epochs == 200
    assert (params.method("sasrec").train.max_eval_samples == 0
            and params.method("discrec_l").backbone["branch_ff"] == 1024)
