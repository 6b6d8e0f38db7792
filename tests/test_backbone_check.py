"""A model's settings are checked by its own typed schema (pipeline.models.base.ModelConfig) when the train stage
starts, before it reads, tracks or writes anything."""
from pathlib import Path

import pytest


@pytest.mark.parametrize("backbone, message", [
    ({"num_layers": 0}, r"num_layers: Input should be greater than or equal to 1, got 0"),
    ({"num_layers": True}, r"num_layers: Input should be a valid integer, got True"),
    ({"dropout": 1.5}, r"dropout: Input should be less than 1, got 1.5"),
    ({"fusion": "concat"}, r"fusion: Input should be 'gate', 'sum' or 'semantic', got 'concat'"),
    ({"branch_width": 3}, r"unknown DiscrecConfig setting\(s\) \['branch_width'\]"),
    ({"codebook_size": 64}, r"\['codebook_size'\] come from the data"),
])
def test_a_bad_backbone_is_refused_when_the_train_stage_starts_before_it_reads_anything(workspace, backbone,
                                                                                        message):
    """The backbone is checked by the model's own schema first thing: the workspace has no semantic IDs for the
    block to read, so an error about the backbone (not about a missing file) shows the check came first."""
    from pipeline.config import ParamsError
    from stages import train

    workspace.params({"dr": {"model": "discrec", "inputs": ["data/processed/semantic_ids/rq"],
                             "backbone": backbone}})
    with pytest.raises(ParamsError, match=r"params.yaml: methods.dr.backbone: .*" + message):
        train.main("dr")
    assert not Path("data/models/dr").exists() and not Path("reports").exists()
