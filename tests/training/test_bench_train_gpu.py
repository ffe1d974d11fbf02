"""bench/train_gpu: its FLOP formula by hand, and one smoke run of the bench itself on CPU
(DeepSpeed ZeRO-3, one gloo rank), so the GPU benchmark works the day a GPU is lent."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

from bench.train_gpu import packed_lengths, peak_tflops, step_flops
from training.plan import Architecture

ROOT = Path(__file__).resolve().parents[2]
TINY = Architecture(num_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=1024)


def test_step_flops_by_hand():
    # per layer q 64·64 + k 64·32 + v 64·32 + o 64·64 + gate/up/down 3·64·128 = 36,864;
    # 2 layers + lm_head 1024·64 = 139,264 frozen; LoRA r 8: 2·8·(128+96+96+128+3·192) = 16,384
    frozen, lora = 2 * 36_864 + 65_536, 16_384
    attention = 6 * 2 * 64 * (100**2 + 28**2)
    assert step_flops(TINY, lora, 128, [100, 28]) == 128 * (4 * frozen + 6 * lora) + attention
    assert step_flops(TINY, lora, 128, [100, 28]) == 92_168_192
    # one sample attending the whole row costs more than the same tokens split in two
    assert step_flops(TINY, lora, 128, [128]) > step_flops(TINY, lora, 128, [64, 64])


def test_peak_by_device_name():
    assert peak_tflops("NVIDIA H100 80GB HBM3", None) == 989.0
    assert peak_tflops("NVIDIA H100 PCIe", None) == 756.0  # not the SXM part's peak
    assert peak_tflops("NVIDIA A100-SXM4-80GB", None) == 312.0
    assert peak_tflops("Tesla T4", None) is None and peak_tflops("Tesla T4", 65.0) == 65.0


def test_packed_rows_are_exactly_full():
    rng = random.Random(3)
    for seq in (128, 4096):
        rows = [packed_lengths(seq, rng) for _ in range(20)]
        assert all(sum(r) == seq and min(r[:-1] or [32]) >= 32 for r in rows)
        assert sum(len(r) for r in rows) > 20  # several samples per row


def test_smoke_run_trains_and_reports(tmp_path):
    out = tmp_path / "smoke.json"
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(ROOT / "bench/train_gpu.py"), "--smoke",
                           "--out", str(out)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["steps"] == 2 and result["seq"] == 128
    assert result["params_lora"] == 16_384 and result["mfu"] is None
    assert result["tokens_per_s"] > 0 and result["model_flops_per_step"] > 128 * 4 * 139_264
    assert result["planner_gib"]["fixed"] == 2.5


def test_smoke_run_through_from_pretrained(tmp_path):
    """--from-pretrained: the bench saves its model and trains it loaded back through the
    trainer's build_model (from_pretrained under ZeRO-3's sharded load)."""
    out, saved = tmp_path / "smoke.json", tmp_path / "saved"
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(ROOT / "bench/train_gpu.py"), "--smoke",
                           "--from-pretrained", str(saved), "--out", str(out)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["loaded"] == "from_pretrained" and result["steps"] == 2
    assert (saved / "config.json").exists() and (saved / "model.safetensors").exists()
