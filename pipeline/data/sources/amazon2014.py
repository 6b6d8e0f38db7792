"""``data.source: amazon2014``: the 2014 Amazon product data (McAuley et al. 2015; docs/data_sources.md)."""
from __future__ import annotations

from pipeline.data.raw_files import RemoteFile
from pipeline.data.sources.amazon import AmazonRelease


class Amazon2014(AmazonRelease):
    name = "amazon2014"
    default_mirrors = ("https://snap.stanford.edu/data/amazon/productGraph/categoryFiles",)

    def files(self) -> list[RemoteFile]:
        cat = self.p.category
        return [RemoteFile(f"reviews_{cat}_5.json.gz", (f"reviews_{cat}_5.json.gz",)),
                RemoteFile(f"meta_{cat}.json.gz", (f"meta_{cat}.json.gz",))]
