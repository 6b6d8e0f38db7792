"""DVC stage `download`: bring the selected source's raw files into data/raw (+ manifest.json)."""
from pipeline import paths, tracking
from pipeline.config import load_params
from pipeline.flows import download_flow, run_stage


def main() -> None:
    params = load_params()
    manifest = download_flow(params, paths.RAW)
    files = manifest["files"]
    with tracking.stage_run("download", params.data.dataset_name, {"data": params.data.model_dump()}) as run:
        run.log_metrics({"files": len(files), "bytes": sum(f["size"] for f in files.values())})
        run.log_dict(manifest, "manifest.json")
    for name, f in files.items():
        print(f"  {name}: {f['size']:,} bytes, sha256 {f['sha256'][:12]}…, from {f['origin']}")


if __name__ == "__main__":
    run_stage("download", main)
