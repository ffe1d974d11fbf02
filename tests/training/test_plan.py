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
    lora = 64 * 16 * (10_240 + 2 * 6_144 + 10_240 + 3 * 32_768)
    assert p.lora_params == lora == 134_217_728
    assert p.gpus == 8
    # ZeRO-3 keeps tensors under conf/deepspeed/zero3.json's persistence threshold (1e6 elements)
    # whole on every GPU: per layer the biases (5120 + 1024 + 1024) and norms (2·5120), and the
    # final norm; everything else is sharded over 8
    whole = 64 * 17_408 + 5_120
    assert p.frozen_weights == 2 * whole + 2 * (total - whole) // 8 == 8_192_927_744
    # the largest gathered module is lm_head / the embedding (152,064·5,120 = 778.6 M), plus the
    # 5e8 prefetch bucket, capped by stage3_max_live_parameters = 1e9 elements, in bf16
    assert p.zero3_gathered == 2 * 1_000_000_000
    # bf16 LoRA weights whole (each matrix is under the threshold), bf16 grads and the 12 B of
    # fp32 master + Adam moments sharded over 8
    assert p.lora_state == 2 * lora + 2 * lora // 8 + 12 * lora // 8 == 503_316_480
    assert p.reduce_bucket == 2 * lora  # 5e8 elements, but only 134 M are trainable
    # checkpointed layer inputs 64·8192·5120·2; one layer recomputed: 2·(4·5120 + 2·1024 +
    # 3·27648) per token; LoRA in it: 7 × 2·16 intermediates, and (dropout 0.05) 3 bytes per
    # input element of the 7 projections: 6·5120 + 27648
    per_token = 2 * (20_480 + 2_048 + 82_944) + 7 * 32 + 3 * (6 * 5_120 + 27_648)
    assert per_token == 386_272
    assert p.activations == 64 * 8192 * 5120 * 2 + 8192 * per_token == 8_533_049_344
    assert p.attention_mask == 0  # flash_attention_2: no s × s mask
    # loss chunks of 2048 tokens × 152,064 × 14 B, plus the final hidden states and their grad
    assert p.logits == 2048 * 152_064 * 14 + 2 * 8192 * 5120 * 2 == 4_527_751_168
    assert p.fixed == FIXED_BYTES == 2_684_354_560
    assert p.total == (8_192_927_744 + 2_000_000_000 + 503_316_480 + 268_435_456
                       + 8_533_049_344 + 4_527_751_168 + 2_684_354_560) == 26_709_834_752
    assert p.fits and p.headroom == 80 * 1024**3 - p.total


def test_logits_are_bounded_by_the_loss_chunk():
    base = plan(plan_input(load_recipe(RECIPE)))
    long = plan(plan_input(load_recipe(RECIPE, ["data.max_length=32768"])))
    # 4× the tokens: 4× the hidden states, the same chunk of logits
    assert long.logits - base.logits == 3 * 2 * 8192 * 5120 * 2
    # unchunked, 32,768 tokens of fp32 logits + log-softmax would be 4 × 2 × 10 GB alone
    small = plan(plan_input(load_recipe(RECIPE, ["train.loss_chunk_tokens=512"])))
    assert base.logits - small.logits == (2048 - 512) * 152_064 * 14


def test_sdpa_pays_for_the_packed_block_mask():
    sdpa = plan(plan_input(load_recipe(RECIPE, ["model.attn_implementation=sdpa"])))
    assert sdpa.attention_mask == 8192 * 8192  # one boolean per (query, key) of the row


def test_stage_and_length_change_the_verdict():
    zero2 = plan(plan_input(load_recipe(RECIPE, ["train.deepspeed=conf/deepspeed/zero2.json"])))
    assert zero2.frozen_weights == 2 * zero2.total_params  # unsharded below stage 3
    assert zero2.zero3_gathered == 0
    long = plan(plan_input(load_recipe(RECIPE, ["data.max_length=65536"])))
    assert not long.fits and long.headroom < 0


def test_recipe_errors_name_the_key():
    # the pipeline's error format: the bad key, and the keys allowed where it stands
    with pytest.raises(RecipeError, match="lora.rr: unknown key; allowed keys here: alpha, "
                                          "dropout, r, target_modules"):
        load_recipe(RECIPE, ["lora.rr=8"])
    with pytest.raises(RecipeError, match="recipe not found: conf/train/nope.yaml"):
        load_recipe("conf/train/nope.yaml")
    assert load_recipe("tiny-cpu").model.num_layers == 2  # a recipe by name, from conf/train/
    with pytest.raises(RecipeError, match="train.lr: Input should be less than or equal to 0.01"):
        load_recipe(RECIPE, ["train.lr=0.1"])  # the seed's "0.1" LoRA learning rate
    with pytest.raises(RecipeError, match="train.deepspeed: .* does not exist"):
        load_recipe(RECIPE, ["train.deepspeed=conf/deepspeed/nope.json"])


def test_plan_command():
    out = subprocess.run([str(Path(sys.executable).parent / "codemill"), "plan", "--recipe",
                          str(RECIPE)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "fits: 24.9 of 80.0 GiB" in out.stdout
    assert "trainable (LoRA) 134.2 M" in out.stdout


def test_plan_json_is_pure_json():
    import json

    out = subprocess.run([str(Path(sys.executable).parent / "codemill"), "plan", "--recipe",
                          str(RECIPE), "--json"], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)  # nothing before or after it on stdout
    assert data["total"] == 26_709_834_752 and data["fits"] is True
    assert data["deepspeed_full_ft_gpu"] > 0  # DeepSpeed's estimator ran, silently


def test_flash_attention_with_packing_needs_micro_batch_1():
    with pytest.raises(RecipeError, match="train.micro_batch_size: must be 1 with packing"):
        load_recipe(RECIPE, ["train.micro_batch_size=2"])
    load_recipe(RECIPE, ["train.micro_batch_size=2", "model.attn_implementation=sdpa"])
