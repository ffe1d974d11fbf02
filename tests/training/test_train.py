"""LoRA + DeepSpeed ZeRO-3 on 2 CPU ranks (gloo): loss falls, kill and resume, adapter reloads.

The real engine, not a mock: torchrun starts two processes with DS_ACCELERATOR=cpu.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pytest
import torch
from deltalake import write_deltalake

from udfs.chatml import train_tokenizer
from udfs.instructions import Templates
from udfs.languages import language_for_path
from udfs.sft import build_records
from udfs.split import SplitParams, split_file

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "udfs" / "fixtures" / "split"
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string()),
                     ("tool_calls", pa.list_(pa.struct([
                         ("id", pa.string()), ("type", pa.string()),
                         ("function", pa.struct([("name", pa.string()),
                                                 ("arguments", pa.string())]))])))])
SFT_SCHEMA = pa.schema([("sft_id", pa.string()), ("split", pa.string()),
                        ("weight", pa.float64()), ("messages", pa.list_(MESSAGE))])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    templates = Templates.load(REPO / "conf" / "sft_templates.yaml")
    rows = []
    for p in sorted(FIXTURES.iterdir()):
        res = split_file(p.read_text(), language_for_path(p.name), p.name, p.name,
                         SplitParams(fim_rate=1.0, max_samples_per_file=100))
        for s in res.samples:
            s.update(file_id=p.name, repo="r", path=p.name, language=language_for_path(p.name),
                     parse_status=res.parse_status)
            records, _ = build_records(s, templates, {"alpha_fraction": 0.6})
            rows += [{"sft_id": r["sft_id"], "split": "eval" if p.suffix == ".go" else "train",
                      "weight": r["quality"] + 0.5, "messages": r["messages"]} for r in records]
    write_deltalake(str(root / "lake" / "gold" / "sft"), pa.Table.from_pylist(rows, SFT_SCHEMA))
    tok = train_tokenizer([p.read_text() for p in FIXTURES.iterdir()] * 2, root / "tok", 800)
    return root, tok


def command(root: Path, tok: Path, out: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2",
            "--master_port", str(29500 + os.getpid() % 1000),
            str(REPO / "training" / "train.py"), "--recipe", str(REPO / "conf/train/tiny-cpu.yaml"),
            "--set", f"data.tokenizer={tok}", "--set", f"data.lakehouse={root / 'lake'}",
            "--set", f"train.output_dir={out}", "--set", "data.max_length=1024",
            "--set", "train.lr=1e-2", "--set", "train.max_steps=16", "--set", "train.save_steps=4",
            "--set", "mlflow.registered_model=tiny-lora"]


def env() -> dict[str, str]:
    return {**os.environ, "DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false"}


def test_train_kill_resume_and_reload(data):
    root, tok = data
    out = root / "run"
    cmd = command(root, tok, out)
    # first attempt: killed (SIGKILL, the whole process group) once a checkpoint exists
    first = subprocess.Popen(cmd, cwd=REPO, env=env(), start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    latest = out / "checkpoints" / "latest"
    deadline = time.monotonic() + 600
    while not (latest.exists() and latest.read_text().strip() in ("step4", "step8")):
        assert first.poll() is None, first.stdout.read()[-4000:]
        assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.2)
    # SIGKILL torchrun and every worker it started (workers may sit in their own process group)
    tree = psutil.Process(first.pid)
    victims = [tree, *tree.children(recursive=True)]
    for proc in victims:
        proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(victims, timeout=30)
    first.wait()
    killed_at = int(latest.read_text().strip().removeprefix("step"))
    assert not (out / "run.json").exists()

    # second attempt: resumes from the checkpoint and finishes
    done = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    summary = json.loads((out / "run.json").read_text())
    assert summary["steps"] == 16 and summary["data_version"] == 0

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    client = mlflow.tracking.MlflowClient()
    [experiment] = [e for e in client.search_experiments() if e.name == "codemill-lora"]
    [run] = client.search_runs([experiment.experiment_id])  # one run, continued
    assert run.info.run_id == summary["mlflow_run_id"]
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "loss")}
    assert sorted(history) == list(range(1, 17))
    assert killed_at in (4, 8)
    first3 = sum(history[s] for s in (1, 2, 3)) / 3
    last3 = sum(history[s] for s in (14, 15, 16)) / 3
    assert last3 < first3 - 0.1, history  # the loss falls
    assert {"lr", "grad_norm", "tokens_per_second"} <= set(run.data.metrics)
    assert run.data.params["lora.r"] == "8" and run.data.tags["data.version"] == "0"
    assert run.inputs.dataset_inputs, "the Delta table is logged as the run's input"

    # the adapter: non-empty, trained, and it reloads to the same outputs
    from peft import PeftModel
    from safetensors.torch import load_file

    weights = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert any("lora_B" in k for k in weights)
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)
    from training.recipe import load_recipe
    from training.train import build_model

    recipe = load_recipe(REPO / "conf/train/tiny-cpu.yaml", [f"data.tokenizer={tok}"])
    base = build_model(recipe, 0)
    model = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
    probe = torch.load(out / "probe.pt")
    with torch.no_grad():
        logits = model(input_ids=probe["input_ids"]).logits
    torch.testing.assert_close(logits, probe["logits"], atol=1e-4, rtol=1e-4)
    # registered as a model version pointing at the run's adapter artifact
    [version] = client.search_model_versions("name = 'tiny-lora'")
    assert version.run_id == run.info.run_id and version.source.endswith("/adapter")
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "adapter")]
    assert "adapter/adapter_model.safetensors" in artifacts
    # merged into the base for export: the same outputs without PEFT
    from transformers import AutoModelForCausalLM

    from training.train import merge_adapter

    merged = AutoModelForCausalLM.from_pretrained(
        str(merge_adapter(recipe, out / "adapter", root / "merged"))).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=probe["input_ids"]).logits,
                                   probe["logits"], atol=1e-4, rtol=1e-4)

    # evaluation: perplexity on the eval split (the Go file's records) and HumanEval through
    # the sandbox; a 2-layer model solves nothing, but every step runs for real
    from training.data import prepare
    from training.evaluate import greedy, humaneval, load_model, perplexity
    from udfs.chatml import load_tokenizer

    tokenizer = load_tokenizer(str(tok))
    evaluated = load_model(recipe, out / "adapter")
    packed, version, _ = prepare(str(root / "lake"), "gold.sft", None, tokenizer, "tiny", 1024,
                                 root / "eval-cache", split="eval")
    ppl, tokens = perplexity(evaluated, packed)
    assert version == 0 and tokens > 0 and 1.0 < ppl < 1024 * 1.5
    he = humaneval(greedy(evaluated, tokenizer, max_new_tokens=8), limit=2)
    assert he.problems == 2 and set(he.statuses.values()) <= {"passed", "failed", "timeout"}
