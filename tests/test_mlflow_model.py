"""Each trained method is logged by its train stage as an MLflow pyfunc model, registered under the method's name:
loaded back with the MLflow client's own `mlflow.pyfunc.load_model`, it ranks the same top-K as
`pipeline.recommend` (tracking on, into a temporary SQLite store)."""
import mlflow
import pandas as pd
import pytest

from pipeline import paths
from pipeline.recommend import recommend
from tests.conftest import TINY_T5, TINY_TRAIN


@pytest.fixture
def tracked(workspace, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("GENREC_TRACKING", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    return workspace


def test_the_registered_model_serves_the_top_k_of_pipeline_recommend_with_the_splits_as_inputs(tracked):
    from stages import train

    tracked.write_ids("rq", tracked.random_ids(), codebook_size=8)
    tracked.params({"tiger": {"model": "tiger", "inputs": ["data/processed/semantic_ids/rq"], "backbone": TINY_T5,
                              "train": {**TINY_TRAIN, "epochs": 1}}})
    train.main("tiger")

    client = mlflow.MlflowClient()
    version = client.search_model_versions("name='tiger'")[0]
    run = client.get_run(version.run_id)
    assert run.info.run_name == "train@tiger"
    inputs = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"interim/train", "interim/valid", "interim/test"} and all(inputs.values()), inputs

    served = mlflow.pyfunc.load_model("models:/tiger/latest")
    assert [c.name for c in served.metadata.get_input_schema().inputs] == ["history"]
    histories = [["i3", "i24"], ["i5"], [f"i{i}" for i in range(30)]]
    out = served.predict(pd.DataFrame({"history": histories}), params={"k": 5})
    for history, items in zip(histories, out["items"]):
        dense = [int(i[1:]) for i in history]  # the workspace's raw ids are "i<dense id>"
        expected = [row["item_id"] for row in recommend(paths.model_dir("tiger"), dense, 5)]
        assert list(items) == expected and len(expected) == 5
