"""Two DVC commands on one workspace (docs/operations.md, "When things fail"; tests/failure_cases.py, shared with
scripts/failure_census.py): a second `dvc repro` while one trains is refused by DVC's lock with its own message and
the first ends with the bytes of a run alone; a queue of two experiments run by two workers sharing one cache and one
MLflow store ends with each experiment's bytes as its params give them alone, and a finished run of each."""
from __future__ import annotations

from tests import failure_cases


def test_a_second_dvc_repro_is_refused_and_the_first_ends_with_the_bytes_of_a_run_alone(tmp_path):
    clean = failure_cases.dvc_workspace(tmp_path / "clean")
    verdict = failure_cases.second_repro(clean, tmp_path)
    assert verdict.ok, verdict


def test_two_queue_workers_sharing_one_cache_and_one_store_each_end_with_their_params_bytes(tmp_path):
    clean = failure_cases.dvc_workspace(tmp_path / "clean")
    verdict = failure_cases.queue_two_workers(clean, tmp_path, tracked=True)
    assert verdict.ok, verdict
