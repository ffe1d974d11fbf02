"""The 32B recipe's code path at tiny scale: a Qwen2 saved with ``save_pretrained`` (safetensors and
a tokenizer with Qwen2.5-Coder's special tokens) trained from that folder with ``from_config:
false`` — ``from_pretrained`` under ZeRO-3's sharded load — with LoRA on DeepSpeed ZeRO-3 on two
CPU ranks (gloo). The real engine, not a mock: torchrun starts the processes with
DS_ACCELERATOR=cpu.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.training import tiny
from training.train import MANIFEST

REPO = tiny.REPO
RECIPE = REPO / "conf" / "train" / "tiny-cpu.yaml"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    tiny.write_sft(root / "lake", tiny.sft_rows())
    tok = tiny.tokenizer(root / "tok")
    model = tiny.save_pretrained_model(root / "qwen2-tiny", tok)
    return root, tok, model


def trainer_args(root: Path, tok: Path, model: Path, out: Path, *extra: str) -> list[str]:
    sets = [f"data.tokenizer={tok}", f"data.lakehouse={root / 'lake'}",
            f"train.output_dir={out}", "data.max_length=1024", "train.lr=1e-2",
            "mlflow.registered_model=tiny-lora", *tiny.pretrained_overrides(model), *extra]
    return ["--recipe", str(RECIPE), *(a for s in sets for a in ("--set", s))]


def run(cmd: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env=tiny.env(**env), capture_output=True, text=True,
                          timeout=900)


def test_pretrained_zero3_kill_during_save_resume_on_pinned_data(data, tmp_path):
    root, tok, model = data
    out = tmp_path / "run"
    args = trainer_args(root, tok, model, out, "train.max_steps=12", "train.save_steps=4",
                        "train.keep_checkpoints=2")
    cmd = [*tiny.torchrun(2), str(REPO / "training" / "train.py"), *args]
    # first attempt: rank 1 dies as step 8's checkpoint is saved, after rank 0 wrote its files
    fault = tmp_path / "fault"
    fault.mkdir()
    (fault / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('RANK') == '1':\n"
        "    from deepspeed.runtime.engine import DeepSpeedEngine\n"
        "    _save = DeepSpeedEngine.save_checkpoint\n"
        "    def save(self, save_dir, tag=None, *a, **k):\n"
        "        if tag == 'step8':\n"
        "            os._exit(17)\n"
        "        return _save(self, save_dir, tag, *a, **k)\n"
        "    DeepSpeedEngine.save_checkpoint = save\n")
    first = run(cmd, PYTHONPATH=str(fault))
    assert first.returncode != 0, first.stdout[-2000:]
    ckpt = out / "checkpoints"
    assert (ckpt / "latest").read_text() == "step4"  # never the half-written step 8
    assert (ckpt / "step4" / MANIFEST).exists() and not (ckpt / "step8" / MANIFEST).exists()

    # what the sharded load did, on each rank, before the engine existed
    for rank in (0, 1):
        report = json.loads((out / "preflight" / f"rank{rank}.json").read_text())
        assert report["partitioned_at_load"] is True  # zero.Init ran inside from_pretrained
        assert report["params_on_rank"] * 2 == report["params_total"]  # only its half
        # Qwen2 tiny by hand: embeddings and lm_head 2·1024·64, 2 layers of q/o 64·64, k/v 64·32,
        # gate/up/down 64·128, q/k/v biases 64 + 2·32, two norms 2·64; the final norm 64
        layer = 2 * 4096 + 2 * 2048 + 3 * 8192 + 128 + 128
        assert report["params_total"] == 2 * 65_536 + 2 * layer + 64 == 205_376
        assert report["training"] is True  # from_pretrained's eval mode was left
        assert report["first_layer_calls_per_micro_batch"] == 2  # recomputed in backward
        assert report["kv_cache_built"] is False
        assert report["attn_implementation"] == "sdpa"

    # gold.sft moves on before the resume: the run keeps training on the version it started on
    tiny.write_sft(root / "lake", tiny.sft_rows()[:5], mode="append")
    done = run(cmd)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    summary = json.loads((out / "run.json").read_text())
    assert summary["steps"] == 12 and summary["data_version"] == 0
    manifest = json.loads((ckpt / "step12" / MANIFEST).read_text())
    assert manifest["data_version"] == 0
    assert [p.name for p in (out / "data-cache").iterdir()] == [
        f"sft-{manifest['cache_key']}.npz"]  # no second tokenization of version 1
    # rotation: the two newest complete checkpoints; the half-written step 8 was replaced
    assert sorted(p.name for p in ckpt.iterdir() if p.is_dir()) == ["step12", "step8"]

    # a checkpoint holds LoRA weights and optimizer state, no frozen weight: fp32 LoRA weights,
    # Adam's two moments and the master copy are 16 B per trainable parameter, plus each rank's
    # pickled bookkeeping (under 40 KB); the frozen base alone would be 4 B × 189,000 more
    lora_params = 16_384
    size = sum(manifest["files"].values())
    assert size < 16 * lora_params + 2 * 40_000 < 4 * (205_376 - lora_params)
    assert set(manifest["files"]) == {f"zero_pp_rank_{r}_mp_rank_00_{k}_states.pt"
                                      for r in (0, 1) for k in ("model", "optim")}

    import mlflow

    # the lakehouse's store (udfs.tracking), where pipeline runs are logged too
    mlflow.set_tracking_uri(f"sqlite:///{(root / 'lake').resolve() / '_mlflow' / 'mlflow.db'}")
    client = mlflow.tracking.MlflowClient()
    [experiment] = [e for e in client.search_experiments() if e.name == "codemill-lora"]
    [mrun] = client.search_runs([experiment.experiment_id])  # one run, continued
    assert mrun.info.run_id == summary["mlflow_run_id"]
    history = {m.step: m.value for m in client.get_metric_history(mrun.info.run_id, "loss")}
    assert set(range(1, 13)) <= set(history)  # steps 5–8 ran twice (before and after the kill)
    assert sum(history[s] for s in (10, 11, 12)) < sum(history[s] for s in (1, 2, 3)) - 0.3
    assert {"lr", "grad_norm", "tokens_per_second"} <= set(mrun.data.metrics)
    assert mrun.data.params["data.version_read"] == "0"
    assert mrun.data.params["model.from_config"] == "False"
    assert mrun.inputs.dataset_inputs, "the Delta table is logged as the run's input"
    # gold.sft was written by tiny.write_sft, not by a pipeline run: no run to link to
    assert "codemill.pipeline_run" not in mrun.data.tags

    # the adapter: non-empty, trained, and it reloads onto the saved base to the same outputs
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    weights = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)
    base = AutoModelForCausalLM.from_pretrained(str(model))
    reloaded = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
    probe = torch.load(out / "probe.pt")
    with torch.no_grad():
        logits = reloaded(input_ids=probe["input_ids"], use_cache=False).logits
    torch.testing.assert_close(logits, probe["logits"], atol=1e-4, rtol=1e-4)
    [version] = client.search_model_versions("name = 'tiny-lora'")
    assert version.run_id == mrun.info.run_id and version.source.endswith("/adapter")

    # merged into the base for export: the same outputs without PEFT
    from training.recipe import load_recipe
    from training.train import merge_adapter

    recipe = load_recipe(RECIPE, [f"data.tokenizer={tok}", *tiny.pretrained_overrides(model)])
    merged = AutoModelForCausalLM.from_pretrained(
        str(merge_adapter(recipe, out / "adapter", tmp_path / "merged"))).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=probe["input_ids"]).logits,
                                   probe["logits"], atol=1e-4, rtol=1e-4)

    # codemill eval through the same loader: perplexity and HumanEval in the sandbox, logged to
    # the training run that wrote the adapter
    done = run([str(Path(sys.executable).parent / "codemill"), "eval", "--adapter",
                str(out / "adapter"), "--limit", "2", "--max-new-tokens", "8",
                *trainer_args(root, tok, model, out, "data.version=0")])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    scores = json.loads(done.stdout.strip().splitlines()[-1])
    assert scores["version"] == 0 and scores["eval_tokens"] > 0
    assert 1.0 < scores["perplexity"] < 1024 * 1.5 and scores["humaneval_problems"] == 2
    assert scores["mlflow_run"] == mrun.info.run_id
    logged = client.get_run(mrun.info.run_id).data
    assert logged.metrics["eval.perplexity"] == pytest.approx(scores["perplexity"])
    assert logged.metrics["humaneval.pass_at_1"] == scores["humaneval_pass@1"]
    assert logged.tags["eval.data"] == "gold.sft@0"


def _probe(root, tok, model, out: Path, nproc: int, grad_accum: int) -> dict:
    target = out / "probe.pt"
    args = trainer_args(root, tok, model, out, "train.micro_batch_size=1",
                        f"train.grad_accum={grad_accum}", "train.max_steps=1",
                        "train.loss_chunk_tokens=64", "data.max_length=256",
                        f"train.gpus_per_node={nproc}")
    done = run([*tiny.torchrun(nproc, port_offset=nproc),
                str(REPO / "tests" / "training" / "grad_probe.py"), str(target), *args])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-5000:]
    return torch.load(target)


def test_loss_is_the_global_token_mean_however_the_step_is_split(data, tmp_path):
    """2 ranks × 2 accumulation steps and 1 rank × 4 read the same 4 packed rows in a step; the
    loss and the LoRA gradients must be the same, and equal the weighted token mean over the 4
    rows computed here without DeepSpeed (full logits, no chunking)."""
    root, tok, model = data
    two = _probe(root, tok, model, tmp_path / "two", nproc=2, grad_accum=2)
    one = _probe(root, tok, model, tmp_path / "one", nproc=1, grad_accum=4)
    assert sorted(two["rows"]) == sorted(one["rows"]) == [0, 1, 2, 3]
    assert two["label_tokens"] == one["label_tokens"]
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
    assert two["grads"].keys() == one["grads"].keys()
    b_grads = [k for k in two["grads"] if "lora_B" in k]
    assert len(b_grads) == 2 * 7  # 2 layers × 7 projections
    for name in two["grads"]:  # tolerance: fp32 sums in another order
        torch.testing.assert_close(two["grads"][name], one["grads"][name], rtol=1e-4,
                                   atol=1e-7)
    assert all(two["grads"][k].abs().sum() > 0 for k in b_grads)

    # the reference: the same rows through the saved model + the same LoRA init, no DeepSpeed
    from training.data import Packed
    from training.model import build_model, lora, weighted_ce_sum
    from training.recipe import load_recipe

    [cache] = (tmp_path / "one" / "data-cache").iterdir()
    packed = Packed.load(cache)
    recipe = load_recipe(RECIPE, [f"data.tokenizer={tok}", *tiny.pretrained_overrides(model)])
    base = build_model(recipe, 0)
    torch.manual_seed(recipe.train.seed)
    peft = lora(base, recipe).train()
    rows = [0, 1, 2, 3]

    def t(a, dtype=torch.long):
        return torch.as_tensor(a[rows], dtype=dtype)

    logits = peft(input_ids=t(packed.input_ids), position_ids=t(packed.position_ids),
                  use_cache=False).logits
    total, n = weighted_ce_sum(logits, t(packed.labels), t(packed.token_weights, torch.float32))
    loss = total / n
    loss.backward()
    assert int(n) == one["label_tokens"]
    assert float(loss.detach()) == pytest.approx(one["loss"], rel=1e-5)
    for name, p in peft.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(one["grads"][name], p.grad, rtol=1e-4, atol=1e-7)
