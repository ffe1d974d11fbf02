#!/usr/bin/env bash
# The wheels bench/gpu_check.sh installs on a lent GPU machine, which reaches no package index.
# Its image has Python 3.12 with torch, numpy, triton and the CUDA libraries; everything else the
# trainer imports travels, at the versions this checkout's .venv runs and CI tests, so the GPU
# figures come from the same code. DeepSpeed has no wheel on PyPI: its sdist is built into a
# pure-Python wheel here (DS_BUILD_OPS=0: any op it needs is compiled on first use there).
#
#   bash bench/gpu_kit.sh              # fills .whl/ (ignored by git, ~45 MB)
#   PYVER=3.11 bash bench/gpu_kit.sh   # for another interpreter (cp311 wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PYVER=${PYVER:-3.12}
KIT=${KIT:-.whl}
# left out: what the image holds, built against its own CUDA and torch
SKIP='^(torch|triton|numpy|setuptools|sympy|mpmath|networkx|jinja2|markupsafe|nvidia-.*|cuda-.*)$'
PLATFORM=(--python-version "$PYVER" --implementation cp --only-binary=:all:
          --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

pins=$("$PY" - <<'PY'
from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in
               ("transformers", "peft", "pydantic", "hjson", "pyyaml", "accelerate", "tokenizers",
                "safetensors", "huggingface_hub")))
PY
)
ds=$("$PY" -c "from importlib.metadata import version; print(version('deepspeed'))")
rm -rf "$KIT" && mkdir -p "$KIT" /tmp/gpu-kit-src
"$PY" -m pip download -q --no-deps --no-binary=:all: -d /tmp/gpu-kit-src "deepspeed==$ds"
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$KIT" \
    "/tmp/gpu-kit-src/deepspeed-$ds.tar.gz"

# the whole closure as pip resolves it for that interpreter (metadata only), less the image's own
"$PY" -m pip install -q --dry-run --ignore-installed --report /tmp/gpu-kit-report.json \
    --target /tmp/gpu-kit-dry "${PLATFORM[@]}" $pins "$KIT"/deepspeed-*.whl
"$PY" - "$SKIP" <<'PY' > /tmp/gpu-kit-wanted.txt
import json, re, sys
skip = re.compile(sys.argv[1], re.I)
for item in json.load(open("/tmp/gpu-kit-report.json"))["install"]:
    meta = item["metadata"]
    if meta["name"].lower() != "deepspeed" and not skip.match(meta["name"]):
        print(f"{meta['name']}=={meta['version']}")
PY
"$PY" -m pip download -q --no-deps "${PLATFORM[@]}" -d "$KIT" -r /tmp/gpu-kit-wanted.txt
ls "$KIT" | wc -l | xargs echo "wheels in $KIT:"
du -sh "$KIT"
