"""DVC stage `download`: bring the selected source's raw files into data/raw (+ manifest.json)."""
from pipeline import paths
from pipeline.config import load_params
from pipeline.orchestration import tracking
from pipeline.orchestration.download import download_flow
from pipeline.orchestration.flows import run_stage


def main() -> None:
    params = load_params()
    with tracking.stage_run("download", params.data.dataset_name, {"data": params.data.model_dump()}) as run:
        manifest = download_flow(params, paths.RAW_DIR)
        files = manifest["files"]
        run.log_metrics({"files": len(files), "bytes": sum(f["size"] for f in files.values())})
        run.log_dict(manifest, "manifest.json")
    for name, f in files.items():
        print(f"  {name}: {f['size']:,} bytes, sha256 {f['sha256'][:12]}…, from {f['origin']}")


if __name__ == "__main__":
    run_stage("download", main)
