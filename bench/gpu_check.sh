#!/usr/bin/env bash
# Issue 24's GPU figures in one run on a lent machine (bench/train_gpu.py twice: the model built
# from config, then saved and loaded back through from_pretrained under ZeRO-3 as the 32B recipe
# loads it), with the wheels of bench/gpu_kit.sh. Results land in $OUT (the device tool sets it;
# else /tmp/gpu-check): copy the JSON into bench/results/ once read.
#
#   bash bench/gpu_kit.sh                        # here, once: fills .whl/
#   device run, carry [".whl"]: bash bench/gpu_check.sh
#
# Two model builds, 2 + 10 steps each and a 3 GB save and load: minutes, inside one device call.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
PY=${PY:-python3}
SEQ=${SEQ:-4096}
STEPS=${STEPS:-10}
KIT=${KIT:-.whl}
EXTRA=${EXTRA:-}  # e.g. "--smoke" to try this script on CPU (DS_ACCELERATOR=cpu, PY=...)
mkdir -p "$OUT"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/gpu-site "$KIT"/*.whl || exit 3
export PYTHONPATH=/tmp/gpu-site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv \
    || echo "no nvidia-smi"; } | tee "$OUT/gpu.txt"
"$PY" -c "import torch, deepspeed, transformers, peft; print('torch', torch.__version__, \
'deepspeed', deepspeed.__version__, 'transformers', transformers.__version__, 'peft', \
peft.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt" || exit 4
rc=0
"$PY" bench/train_gpu.py --seq "$SEQ" --steps "$STEPS" --out "$OUT/train_gpu.json" $EXTRA \
    > "$OUT/train_gpu.log" 2>&1 || rc=5
tail -n 40 "$OUT/train_gpu.log"
"$PY" bench/train_gpu.py --seq "$SEQ" --steps "$STEPS" --from-pretrained /tmp/qwen2-1.5b \
    --out "$OUT/train_gpu_pretrained.json" $EXTRA > "$OUT/train_gpu_pretrained.log" 2>&1 || rc=6
tail -n 40 "$OUT/train_gpu_pretrained.log"
exit $rc
