"""docs/adding_a_tokenizer.md's example, run as written through the tokenize and semantic_ids stages.

In a child process: ``pipeline.config`` builds ``TokenizerParams`` from the schemas when it is first imported,
so the guide's schema must be in place before that, and no other test may see the extra kind."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.tokenizers.semantic_ids import read_id_table
from tests.conftest import N_ITEMS

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "adding_a_tokenizer.md"

# What the guide says to do, done in the child: the schema into schemas.py and SCHEMAS, the kind's module,
# its registry line; then the two stages' main functions.
DRIVER = """
import sys, types
import pipeline.tokenizer_schemas as schemas
schema_code, kind_code = sys.argv[1], sys.argv[2]
exec(compile(schema_code, "docs/adding_a_tokenizer.md (schema)", "exec"), schemas.__dict__)
schemas.SCHEMAS["hashed"] = schemas.HashedTokenizer
module = types.ModuleType("pipeline.tokenizers.kinds.hashed")
sys.modules[module.__name__] = module
exec(compile(kind_code, "docs/adding_a_tokenizer.md (kind)", "exec"), module.__dict__)
from pipeline.tokenizers import registry
registry.KINDS["hashed"] = module.HashedKind
from stages import semantic_ids, tokenize
tokenize.main("hashed")
semantic_ids.main("hashed")
"""


def guide_example() -> tuple[str, str, dict, str]:
    """The guide's schema, its kind module, its params block and its text (for the registry lines)."""
    text = GUIDE.read_text()
    schema, kind = re.findall(r"```python\n(.*?)```", text, re.S)
    block = yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))
    return schema, kind, block, text


def test_the_guide_example_tokenizes_and_derives_unique_ids_through_the_stages(workspace):
    schema, kind, block, text = guide_example()
    assert '"hashed": HashedTokenizer,' in text and '"hashed": HashedKind,' in text  # its registry lines
    assert "from pipeline.tokenizers.kinds.hashed import HashedKind" in text
    # written, not validated here: this process's config does not know the kind (the child's does)
    (workspace.root / "params.yaml").write_text(yaml.safe_dump({"methods": {}, **block}, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", DRIVER, schema, kind], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ids = read_id_table(Path("data/processed/semantic_ids/hashed/ids.parquet"))
    assert ids.shape == (N_ITEMS, 3)  # two hashed levels and the collision token
    assert len({tuple(row) for row in ids.tolist()}) == N_ITEMS  # every item one distinct ID
    assert (ids[:, :2] < 64).all() and (ids >= 0).all()
    meta = json.loads(Path("data/processed/semantic_ids/hashed/meta.json").read_text())
    assert meta == {"codebook_size": 64, "levels": 2, "depth": 3}
    metrics = json.loads(Path("reports/metrics/tokenize_hashed.json").read_text())
    assert metrics["items"] == N_ITEMS and 0 <= metrics["collision_rate"] < 1
    assert not Path("data/processed/semantic_ids/hashed/codebooks.safetensors").exists()  # no code vectors
    assert np.array_equal(ids[:, :2], np.load("data/processed/tokenizers/hashed/codes.npy"))


def test_an_unknown_tokenizer_kind_is_refused_naming_the_block_and_the_kinds(workspace):
    from pipeline.config import ParamsError, load_params

    (workspace.root / "params.yaml").write_text(yaml.safe_dump({"tokenizers": {"mine": {"model": "hashd"}}}))
    with pytest.raises(ParamsError, match=r"tokenizers.mine.model: unknown tokenizer kind 'hashd'; "
                                          r"known kinds: external, letter, rqvae"):
        load_params()  # what tokenize@mine reads first (after pinning its CPU kernels, which this process cannot)
