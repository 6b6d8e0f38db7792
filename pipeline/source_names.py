"""The names ``data.source`` accepts: each -> the class that implements it and the dataset name it gives.

A table that imports nothing, so that pipeline/config.py checks ``data.source`` against it without loading
a reader (every stage imports config). The classes are in pipeline/data/sources/, one module per source;
pipeline/data/sources/registry.py imports each module, so that the download and filter stages' code digests
(pipeline/code_deps.py) cover them. Adding a dataset: docs/adding_a_dataset.md.
"""
from __future__ import annotations

from typing import NamedTuple


class SourceEntry(NamedTuple):
    implementation: str  # "module:Class" of a pipeline.data.sources.base.Source
    # The name runs and reports use for the dataset (one MLflow experiment per dataset): a template over
    # {category} (data.category) and {local} (data.local.name, or the interactions file's stem).
    dataset: str


SOURCES: dict[str, SourceEntry] = {
    # the embedded default (data/embedded/amazon-scientific/SOURCE.md)
    "amazon-scientific": SourceEntry("pipeline.data.sources.amazon_scientific:AmazonScientific", "amazon-scientific"),
    "movielens-100k": SourceEntry("pipeline.data.sources.movielens_100k:MovieLens100K", "movielens-100k"),
    "amazon2023": SourceEntry("pipeline.data.sources.amazon2023:Amazon2023", "amazon2023-{category}"),
    "amazon2018": SourceEntry("pipeline.data.sources.amazon2018:Amazon2018", "amazon2018-{category}"),
    "amazon2014": SourceEntry("pipeline.data.sources.amazon2014:Amazon2014", "amazon2014-{category}"),
    "local": SourceEntry("pipeline.data.sources.local:LocalFiles", "local-{local}"),
}
