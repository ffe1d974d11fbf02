"""The base model as the 32B run loads it, LoRA, and the loss the trainer optimizes.

**Loading under ZeRO-3.** transformers shards weights while it loads them (``deepspeed.zero.Init``)
only when a ``HfDeepSpeedConfig`` for stage 3 is alive *before* ``from_pretrained`` /
``from_config`` is called (the transformers–DeepSpeed integration's "non-Trainer" rule). Without
it every rank holds the whole model in host memory first (≈65.5 GB of bf16 weights per rank for
the 32B model, ≈524 GB on a node of 8). ``build_model`` creates that object first and keeps it
referenced for the life of the process (transformers holds only a weak reference to it).

**Attention.** ``flash_attention_2`` is used when the ``flash-attn`` package imports on a CUDA
device; otherwise ``sdpa`` (transformers 5 would try to fetch a kernel from the hub instead, which
fails offline). Both keep packed conversations apart while no KV cache is in use: flash-attention
through its variable-length path (micro-batch 1, checked by the recipe), sdpa through the block
mask transformers builds from the restarting ``position_ids``. Training and perplexity therefore
always run with ``use_cache=False``.

**The loss** (``WeightedLM``): the decoder's last hidden states at label positions only, then
``lm_head`` and cross-entropy in chunks of ``chunk_tokens`` under activation checkpointing, so at
most one chunk's logits (bf16, their fp32 copy and the fp32 gradient) exist at a time instead of
``tokens × vocab`` of them — 8,192 × 152,064 fp32 logits alone are 5 GB, and the saved
log-softmax as much again. The module returns the *sum* Σ wₜ·CE(t) over label tokens; the trainer
divides by the label count of the whole optimizer step (see ``training.train``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from training.recipe import Recipe

log = logging.getLogger("codemill.train")
IGNORE = -100
_LIVE_DS_CONFIG: list[Any] = []  # transformers keeps only a weakref to HfDeepSpeedConfig


def resolve_attention(requested: str | None, cuda: bool) -> str:
    """The attention implementation that will actually run (see the module docstring)."""
    if requested == "flash_attention_2":
        from transformers.utils import is_flash_attn_2_available

        if cuda and is_flash_attn_2_available():
            return "flash_attention_2"
        log.warning("flash_attention_2 needs the flash-attn package and a CUDA device; using sdpa "
                    "(packed conversations are still kept apart by the position-id block mask)")
        return "sdpa"
    return requested or "sdpa"


def enable_zero3_init(ds_config: dict[str, Any] | None) -> bool:
    """Make transformers shard weights as they load, when ``ds_config`` is ZeRO stage 3."""
    from transformers.integrations import HfDeepSpeedConfig

    _LIVE_DS_CONFIG.clear()
    if not ds_config or int(ds_config.get("zero_optimization", {}).get("stage", 0)) != 3:
        return False
    _LIVE_DS_CONFIG.append(HfDeepSpeedConfig(ds_config))
    return True


def build_model(recipe: Recipe, vocab: int, ds_config: dict[str, Any] | None = None,
                cuda: bool = False):
    """The recipe's base model: loaded with ``from_pretrained`` or built from its numbers
    (``model.from_config``), sharded at load under ZeRO-3 when ``ds_config`` says stage 3, with
    the KV cache off."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    m = recipe.model
    dtype = torch.bfloat16 if recipe.train.bf16 else torch.float32
    attn = resolve_attention(m.attn_implementation, cuda)
    enable_zero3_init(ds_config)
    if m.from_config:
        if m.vocab_size < vocab:
            raise SystemExit(f"model.vocab_size {m.vocab_size} < tokenizer vocabulary {vocab}")
        torch.manual_seed(recipe.train.seed)  # every rank builds the same initial weights
        config = Qwen2Config(
            vocab_size=m.vocab_size, hidden_size=m.hidden_size,
            intermediate_size=m.intermediate_size, num_hidden_layers=m.num_layers,
            num_attention_heads=m.num_attention_heads, num_key_value_heads=m.num_key_value_heads,
            tie_word_embeddings=m.tie_word_embeddings, max_position_embeddings=max(
                4096, recipe.data.max_length))
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
    else:
        model = AutoModelForCausalLM.from_pretrained(m.name, dtype=dtype, attn_implementation=attn)
        if model.config.vocab_size < vocab:
            raise SystemExit(f"{m.name}: vocabulary {model.config.vocab_size} < tokenizer's {vocab}")
    model.config.use_cache = False
    return model


def lora(model, recipe: Recipe):
    from peft import LoraConfig, get_peft_model

    spec = recipe.lora
    return get_peft_model(model, LoraConfig(
        r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules), task_type="CAUSAL_LM"))


def weighted_ce_sum(logits, labels, weights):
    """(Σ wₜ·CE(logitsₜ₋₁, labelₜ), label count) over one batch's full logits: the reference the
    chunked loss is tested against, and what a caller holding logits uses."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    ce = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)),
                         shift_labels.reshape(-1), ignore_index=IGNORE, reduction="none")
    mask = (shift_labels.reshape(-1) != IGNORE).float()
    return (ce * weights[:, 1:].reshape(-1) * mask).sum(), mask.sum()


class WeightedLM(torch.nn.Module):
    """``forward(input_ids, position_ids, labels, weights)`` → (Σ wₜ·CEₜ, label count, whether the
    decoder returned a KV cache), with the chunked, checkpointed head of the module docstring."""

    def __init__(self, peft_model, chunk_tokens: int = 2048):
        super().__init__()
        self.model = peft_model
        self.chunk_tokens = chunk_tokens

    def forward(self, input_ids, position_ids, labels, weights):
        causal = self.model.get_base_model()
        out = causal.model(input_ids=input_ids, position_ids=position_ids, use_cache=False)
        hidden = out.last_hidden_state[:, :-1]
        target = labels[:, 1:]
        mask = target != IGNORE
        h, y, w = hidden[mask], target[mask], weights[:, 1:][mask].float()
        head = causal.lm_head

        def chunk_loss(hc, yc, wc):
            return (F.cross_entropy(head(hc).float(), yc, reduction="none") * wc).sum()

        total = hidden.sum() * 0.0  # keeps the graph when a batch has no label token
        for a in range(0, h.shape[0], self.chunk_tokens):
            b = a + self.chunk_tokens
            total = total + checkpoint(chunk_loss, h[a:b], y[a:b], w[a:b], use_reentrant=False)
        return total, mask.sum(), any(k in ("cache", "past_key_values") for k in out.keys())
