"""``data.source: amazon2018``: Amazon Review Data 2018 (Ni et al. 2019; docs/data_sources.md)."""
from __future__ import annotations

from pathlib import Path

import polars as pl

from pipeline.data.raw_files import RemoteFile
from pipeline.data.readers import ReadReport, read_delimited
from pipeline.data.sources.amazon import AmazonRelease


class Amazon2018(AmazonRelease):
    name = "amazon2018"
    default_mirrors = (
        "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2",
        "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2",
        "https://jmcauley.ucsd.edu/data/amazon_v2",
    )

    def files(self) -> list[RemoteFile]:
        cat = self.p.category
        meta = RemoteFile(f"meta_{cat}.json.gz", (f"metaFiles2/meta_{cat}.json.gz",))
        if self.p.amazon2018_files == "reviews_5core":
            inter = RemoteFile(f"{cat}_5.json.gz", (f"categoryFilesSmall/{cat}_5.json.gz",))
        else:
            inter = RemoteFile(f"{cat}.csv", (f"categoryFilesSmall/{cat}.csv",))
        return [inter, meta]

    def read_csv(self, path: Path, max_bad: int, report: ReadReport) -> pl.DataFrame:
        # the ratings CSV: no header; item, user, rating, timestamp (docs/data_sources.md)
        return read_delimited(path, {"user": "user", "item": "item", "timestamp": "timestamp"}, max_bad, report,
                              header=False, names=["item", "user", "rating", "timestamp"])
