"""The interruption census (tests/interruption_cases.py): every kind of stage stopped by SIGTERM or SIGKILL while it
writes, then run again, writes the same bytes as an uninterrupted run and leaves no temporary file; SIGTERM stops it
with status 143 and a one-line message."""
import shutil
import signal

import pytest

from tests.interruption_cases import INTERRUPTED, interrupt, prepare


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    work = tmp_path_factory.mktemp("interruptions") / "work"
    prepare(work, embed=False)  # random item vectors: no case here interrupts the text encoder
    return work


# In CI, the cheap form: the stages after the text encoder killed (SIGKILL runs no cleanup: the harder case) and a
# training terminated; the census script runs every kind with both signals (python scripts/interruption_census.py:
# 10 of 10 on the 2-core CPU).
CASES = [(stage, "SIGKILL") for stage in INTERRUPTED if stage != "embed"] + [("train", "SIGTERM")]


@pytest.mark.parametrize("stage, sig", CASES)
def test_a_stage_interrupted_while_writing_and_run_again_writes_the_same_bytes(prepared, tmp_path, stage, sig):
    work = tmp_path / "work"
    shutil.copytree(prepared, work)
    verdict = interrupt(work, stage, sig)
    assert verdict.signalled_while == "writing", verdict
    assert verdict.same_bytes and verdict.remaining == [], verdict
    if sig == "SIGTERM":
        assert verdict.exit_status == 128 + signal.SIGTERM and "terminated after" in verdict.message, verdict
        assert verdict.leftovers == [], verdict  # the stage's `finally` removed its temporary output
    else:
        assert verdict.exit_status == -signal.SIGKILL, verdict
