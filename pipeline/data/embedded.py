"""The dataset shipped inside the repository (`data.source: amazon-scientific`), checked byte for byte.

Amazon 2018 "Industrial and Scientific", 5-core, LETTER-style processing: 8,317 users, 4,344 items, 58,492
interactions, with title, description, brand and categories for every item. Where it comes from, its licence
and its terms: data/embedded/amazon-scientific/SOURCE.md. Its SHA-256s live here, in the code, so that a file
changed in the folder (and its SHA256SUMS changed with it) is still refused.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.data.readers import DataError
from pipeline.io import sha256_file

SOURCE = "amazon-scientific"
DIR = Path("data/embedded/amazon-scientific")
NAME = "Scientific"  # <name>.inter.json / <name>.item.json: the sequences format (docs/data.md)
SHA256 = {
    "Scientific.inter.json": "32c6c01876ebecebdfabd2dbd358594be36655e9e7b168772a7a3aa3624ee1b4",
    "Scientific.item.json": "ad24200106868dac2b544d812305d61a11bf07fed78b2f7cdca41d66f3418e71",
}


def verify(folder: Path) -> None:
    """Refuse a missing file or one whose SHA-256 is not the shipped one, naming it and saying how to restore it:
    ``folder`` is the shipped folder (download stage) or its copy in data/raw (filter stage)."""
    for name, expected in SHA256.items():
        path = folder / name
        shipped = Path(folder) == DIR
        remedy = (f"restore it with `git checkout -- {DIR / name}` (SOURCE.md there says where it comes from)"
                  if shipped else "run the download stage again (`dvc repro download`), which copies the shipped file")
        if not path.exists():
            raise DataError(f"{path}: missing; {remedy}.")
        found = sha256_file(path)
        if found != expected:
            raise DataError(f"{path}: SHA-256 {found} is not the shipped file's {expected}: the file was changed or "
                            f"damaged; {remedy}. For other data, set data.source (docs/data.md).")
