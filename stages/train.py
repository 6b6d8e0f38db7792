"""DVC stage `train@<method>`: fit one method on the training split, select on validation NDCG@10."""
import sys

from pipeline import paths
from pipeline.config import load_params
from pipeline.io import write_curve, write_json
from pipeline.models.registry import check_backbone
from pipeline.orchestration import tracking
from pipeline.orchestration.flows import as_flow, run_stage
from pipeline.orchestration.mlflow_model import log_recommender
from pipeline.runtime import distributed
from pipeline.runtime.reproducible import pin_threads
from pipeline.training.method import train_method


def main(method: str) -> None:
    params = load_params()
    pin_threads(params.cpu_threads)  # the output bytes depend on the thread count
    block = params.method(method)
    # the backbone's settings are checked before anything is read, tracked or written
    check_backbone(block.model, block.backbone, f"params.yaml: methods.{method}")
    out_dir = paths.model_dir(method)
    curve = paths.PLOTS_DIR / f"train_{method}.csv"
    section = {"method": block.model_dump(), "data": params.data.model_dump(), "filter": params.filter.model_dump(),
               "embed": params.embed.model_dump(), "seed": params.seed}
    if block.tokenizer:  # the upstream block that shaped this method's input
        section["tokenizer"] = {"name": block.tokenizer, **params.tokenizer(block.tokenizer).model_dump()}
    if not distributed.is_main():
        # torchrun's other processes: train their share; rank 0 tracks, logs and writes every file
        train_method(params, method, out_dir, log=lambda *_: None)
        return
    with tracking.stage_run(f"train@{method}", params.data.dataset_name, section, group=f"method:{method}") as run:
        summary, history = as_flow(train_method, name=f"train@{method}")(
            params, method, out_dir,
            on_epoch=lambda epoch, row: run.log_metrics({k: v for k, v in row.items() if isinstance(v, (int, float))
                                                         and k != "epoch"}, step=epoch))
        if history:
            write_curve(history, curve)
            run.log_artifact(str(curve))
        else:
            curve.parent.mkdir(parents=True, exist_ok=True)
            curve.write_text("epoch\n")
        write_json(summary, paths.METRICS_DIR / f"train_{method}.json")
        run.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, (int, float))})
        run.log_splits(paths.SEQUENCES_DIR)
        # registered under the method's name: mlflow.pyfunc.load_model("models:/<method>/latest") serves its top-K
        if run.tracking:
            log_recommender(out_dir, paths.ITEMS, method)
        if "precision" in summary:  # what train.precision resolved to here: runs of other machines told apart
            run.set_tags({"train.precision_used": summary["precision"], "train.device_used": summary["device"]})


def main_then_leave(method: str) -> None:
    try:
        main(method)
    finally:
        distributed.leave()


if __name__ == "__main__":
    run_stage(f"train@{sys.argv[1]}", lambda: main_then_leave(sys.argv[1]))
