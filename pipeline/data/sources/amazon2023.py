"""``data.source: amazon2023``: Amazon Reviews 2023 (Hou et al. 2024, McAuley Lab; docs/data_sources.md)."""
from __future__ import annotations

from pathlib import Path

import polars as pl

from pipeline.data.raw_files import RemoteFile
from pipeline.data.readers import ReadReport, read_delimited
from pipeline.data.sources.amazon import AmazonRelease


class Amazon2023(AmazonRelease):
    name = "amazon2023"
    # docs/data_sources.md: two mirrors with the same layout (and the Hugging Face hub, which needs a token-less
    # hub client we do not want at run time).
    default_mirrors = (
        "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023",
        "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_2023",
    )

    def files(self) -> list[RemoteFile]:
        cat = self.p.category
        meta = RemoteFile(f"meta_{cat}.jsonl.gz", (f"raw/meta_categories/meta_{cat}.jsonl.gz",))
        if self.p.amazon2023_files == "raw_reviews":
            inter = RemoteFile(f"{cat}.jsonl.gz", (f"raw/review_categories/{cat}.jsonl.gz",))
        else:
            inter = RemoteFile(f"{cat}.csv.gz", (f"benchmark/5core/rating_only/{cat}.csv.gz",))
        return [inter, meta]

    def read_csv(self, path: Path, max_bad: int, report: ReadReport) -> pl.DataFrame:
        # the benchmark CSV: user_id,parent_asin,rating,timestamp, header optional
        return read_delimited(path, {"user": "user_id", "item": "parent_asin", "timestamp": "timestamp"},
                              max_bad, report, names=["user_id", "parent_asin", "rating", "timestamp"])
