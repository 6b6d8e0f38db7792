#!/usr/bin/env bash
# A short check of training speed and of TIGER's recipe on a GPU (about 7 minutes on one H100, from the parts
# timed there: benchmarks 2 + 1.5 minutes, Beauty TIGER 40 epochs at 4.5 s with validation, then the test):
#   1. benchmarks/bench_train.py, paper-size TIGER (T5 4+4, 6 heads x 64, FFN 1024), batch 256: the step of
#      the host-batch reference step, the trainer eager and compiled (CUDA graphs), a plain HF T5 step; and SASRec;
#   2. the same for DECOR at TIGER's paper size (its step time against TIGER's);
#   3. paper-size TIGER trained on a workspace's data (scripts/run_method.py) to early stopping or its
#      epoch budget, then evaluated on the test split.
#
#   bash scripts/gpu_check.sh WORKSPACE OUT [EPOCHS]
#
# WORKSPACE holds params.yaml, data/interim/sequences and data/processed/semantic_ids/rqvae from a
# `dvc repro semantic_ids@rqvae` made elsewhere (e.g. Amazon Beauty as LETTER ships it: docs/performance.md, "Amazon
# Beauty on a GPU"). OUT receives bench_tiger.txt, bench_decor.txt, tiger.log and tiger.json.
# Extra Python packages the server lacks (pydantic) can come as wheels in $GENREC_WHEELS.
set -euo pipefail
WS=$(cd "$1" && pwd); OUT=$2; EPOCHS=${3:-40}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
export GENREC_ORCHESTRATOR=none GENREC_TRACKING=0 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the repository's packages without installing it
if [ -n "${GENREC_WHEELS:-}" ]; then
  SITE=$(mktemp -d)
  pip install -q --no-index --no-deps --target "$SITE" "$GENREC_WHEELS"/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

python benchmarks/bench_train.py --steps 100 --batch-size 256 2>&1 | tee "$OUT/bench_tiger.txt"
python benchmarks/bench_train.py --steps 100 --batch-size 256 --method decor --paper-size --no-sasrec --no-plain --no-grouped \
  2>&1 | tee "$OUT/bench_decor.txt"

# TIGER's paper size (docs/method_reference.md §4) and the DECOR appendix's optimiser; validation on 2,000 users
# every 2 epochs; the time budget is a safety stop, the cosine schedule is sized to EPOCHS.
python scripts/run_method.py --workspace "$WS" --method tiger --report "$OUT/tiger.json" \
  --set ++methods.tiger.backbone.num_layers=4 --set ++methods.tiger.backbone.num_decoder_layers=4 \
  --set ++methods.tiger.backbone.num_heads=6 --set ++methods.tiger.backbone.d_kv=64 \
  --set ++methods.tiger.backbone.d_ff=1024 \
  --set ++methods.tiger.train.epochs="$EPOCHS" --set ++methods.tiger.train.warmup_steps=2000 \
  --set ++methods.tiger.train.eval_every=2 --set ++methods.tiger.train.max_eval_samples=2000 \
  --set ++methods.tiger.train.eval_batch_size=512 --set ++methods.tiger.train.time_budget_minutes=3.5 \
  --set evaluate.batch_size=512 2>&1 | tee "$OUT/tiger.log"
