"""Small real inputs for the training tests: a gold.sft Delta table cut from the split fixtures, a
tokenizer with Qwen2.5-Coder's special tokens, and a tiny Qwen2 checkpoint saved the way a hub
model is (``save_pretrained``: config.json + model.safetensors, the tokenizer beside it), so the
trainer loads it with ``from_pretrained`` exactly as it loads Qwen2.5-Coder-32B."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pyarrow as pa
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
# the tiny architecture: 2 Qwen2 layers; the embeddings (1024 × 64, twice) are most of it, so a
# checkpoint that held frozen weights would be several times larger than one that does not
TINY = {"num_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 1024}


def sft_rows() -> list[dict]:
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
    return rows


def write_sft(lake: Path, rows: list[dict], mode: str = "error") -> None:
    write_deltalake(str(lake / "gold" / "sft"), pa.Table.from_pylist(rows, SFT_SCHEMA), mode=mode)


def tokenizer(out: Path) -> Path:
    return train_tokenizer([p.read_text() for p in FIXTURES.iterdir()] * 2, out, 800)


def save_pretrained_model(out: Path, tok_dir: Path, seed: int = 11) -> Path:
    """A tiny Qwen2 with random weights, saved as safetensors with its tokenizer beside it."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=TINY["vocab_size"], hidden_size=TINY["hidden_size"],
                         intermediate_size=TINY["intermediate_size"],
                         num_hidden_layers=TINY["num_layers"],
                         num_attention_heads=TINY["num_attention_heads"],
                         num_key_value_heads=TINY["num_key_value_heads"],
                         max_position_embeddings=4096, tie_word_embeddings=False)
    Qwen2ForCausalLM(config).save_pretrained(str(out), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(tok_dir)).save_pretrained(str(out))
    return out


def pretrained_overrides(model_dir: Path) -> list[str]:
    """--set values that point the tiny recipe at a saved model, as the 32B recipe points at
    Qwen/Qwen2.5-Coder-32B-Instruct (from_config: false)."""
    return [f"model.name={model_dir}", "model.from_config=false",
            *(f"model.{k}={v}" for k, v in TINY.items())]


def torchrun(nproc: int, port_offset: int = 0) -> list[str]:
    return [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", str(nproc),
            "--master_port", str(29500 + (os.getpid() + port_offset) % 1000)]


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false",
            "CUDA_VISIBLE_DEVICES": "", **extra}
