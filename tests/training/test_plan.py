"""The memory planner against hand arithmetic for Qwen2.5-Coder-32B + LoRA on 8×A100-80GB."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from training.plan import FIXED_BYTES, plan
from training.recipe import RecipeError, load_recipe, plan_input

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "conf" / "train" / "qwen2.5-coder-32b-lora.yaml"


def test_32b_on_8_a100_by_hand():
    p = plan(plan_input(load_recipe(RECIPE)))
    # per layer: q, o 5120·5120; k, v 5120·1024; gate, up, down 5120·27648; q/k/v biases 5120 +
    # 2·1024; two RMSNorms 2·5120
    layer = 2 * 26_214_400 + 2 * 5_242_880 + 3 * 141_557_760 + 7_168 + 10_240
    assert layer == 487_605_248
    total = 64 * layer + 2 * 152_064 * 5_120 + 5_120  # untied embeddings + final norm
    assert p.total_params == total == 32_763_876_352
    # LoRA r=16 on the 7 projections: 16·(in + out) summed = 16·131,072 per layer
    assert p.lora_params == 64 * 16 * (10_240 + 2 * 6_144 + 10_240 + 3 * 32_768) == 134_217_728
    assert p.gpus == 8
    assert p.frozen_weights == 2 * total // 8 == 8_190_969_088
    assert p.zero3_gathered == 2 * (layer + 500_000_000)
    assert p.lora_state == 16 * 134_217_728 // 8
    assert p.activations == 64 * 8192 * 5120 * 2 + 8192 * 2 * (4 * 5120 + 2 * 1024 + 3 * 27648)
    assert p.logits == 8192 * 152_064 * 6
    assert p.total == (8_190_969_088 + 1_975_210_496 + 268_435_456 + 7_096_762_368
                       + 7_474_249_728 + FIXED_BYTES) == 27_689_981_696
    assert p.fits and p.headroom == 80 * 1024**3 - p.total


def test_stage_and_length_change_the_verdict():
    zero2 = plan(plan_input(load_recipe(RECIPE, ["train.deepspeed=conf/deepspeed/zero2.json"])))
    assert zero2.frozen_weights == 2 * zero2.total_params  # unsharded below stage 3
    assert zero2.zero3_gathered == 0
    long = plan(plan_input(load_recipe(RECIPE, ["data.max_length=65536"])))
    assert not long.fits and long.headroom < 0


def test_recipe_errors_name_the_key():
    with pytest.raises(RecipeError, match="lora.rr: Extra inputs are not permitted"):
        load_recipe(RECIPE, ["lora.rr=8"])
    with pytest.raises(RecipeError, match="train.lr: Input should be less than or equal to 0.01"):
        load_recipe(RECIPE, ["train.lr=0.1"])  # the seed's "0.1" LoRA learning rate
    with pytest.raises(RecipeError, match="train.deepspeed: .* does not exist"):
        load_recipe(RECIPE, ["train.deepspeed=conf/deepspeed/nope.json"])


def test_plan_command():
    out = subprocess.run([str(Path(sys.executable).parent / "codemill"), "plan", "--recipe",
                          str(RECIPE)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "fits: 25.8 of 80.0 GiB" in out.stdout
    assert "trainable (LoRA) 134.2 M" in out.stdout
