"""The dataset sources by name: ``data.source`` -> its class (pipeline/source_names.py names them).

Every source module is imported here with a plain ``import`` statement, so that the download and filter
stages' code digests (pipeline/code_deps.py reads import statements) cover every source they may run;
tests/test_adding_a_dataset.py checks that none is left out.
"""
from __future__ import annotations

import importlib

from pipeline import source_names
from pipeline.config import DataParams
from pipeline.data.sources import amazon2014, amazon2018, amazon2023, amazon_scientific, local, movielens_100k
from pipeline.data.sources.base import Source

# Every source module, imported by statement for the code digests (see above).
MODULES = (amazon_scientific, movielens_100k, amazon2023, amazon2018, amazon2014, local)


def source_class(name: str) -> type[Source]:
    """The class of source ``name`` (config has checked that ``data.source`` is a known name)."""
    module, cls = source_names.SOURCES[name].implementation.split(":")
    return getattr(importlib.import_module(module), cls)


def source_for(p: DataParams) -> Source:
    """The source the ``data:`` block selects, built from it."""
    return source_class(p.source)(p)
