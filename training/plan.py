"""Per-GPU memory plan for LoRA fine-tuning under DeepSpeed ZeRO (``codemill plan``).

Parameter counts come from the architecture (a Qwen2 decoder: attention with q/k/v biases and
grouped-query key/value heads, SwiGLU MLP, RMSNorm, untied embeddings unless stated); the LoRA
count is r·(in + out) for every targeted projection of every layer. b = micro-batch, s = sequence
length, h = hidden, kv = key/value width, i = MLP width, V = vocabulary, N = GPUs in the job,
L = LoRA parameters. Every term is in bytes per GPU:

* **frozen_weights** — bf16, 2 B/param. ZeRO-3 shards a tensor over the N GPUs (2·P/N) unless
  it has fewer than ``stage3_param_persistence_threshold`` elements: those stay whole on every
  GPU (the biases and norms, and every LoRA matrix; the latter are counted in ``lora_state``).
  Stages 0–2 keep a full copy.
* **zero3_gathered** — ZeRO-3 gathers a module's full weights for its forward and backward: the
  largest module is the embedding or ``lm_head`` (V·h, 1.56 GB for the 32B model), not a decoder
  layer, plus the prefetch bucket (``stage3_prefetch_bucket_size`` elements), all bf16, capped
  by ``stage3_max_live_parameters``.
* **lora_state** — mixed-precision Adam, 16 B/param (ZeRO paper, Rajbhandari et al. 2020, §3.1:
  2 bf16 weights + 2 bf16 grads + 12 fp32 master weights, momentum, variance): the 12 sharded from
  stage 1, the grads from stage 2; the bf16 weights of LoRA matrices stay whole under ZeRO-3
  (each is below the persistence threshold: r·in elements).
* **reduce_bucket** — the gradient bucket ZeRO reduces through: ``reduce_bucket_size`` elements
  in bf16, at most the trainable parameters.
* **activations** — with gradient checkpointing each layer keeps its input (b·s·h bf16), and one
  layer at a time is recomputed with its full activations: per token 2·(4h + 2·kv + 3i) bytes
  (normed input, q/k/v, attention output, o-proj input, MLP input, gate, up and gated product;
  after Korthikanti et al. 2022, "Reducing activation recomputation", adapted to GQA and SwiGLU),
  plus what LoRA adds in that layer: per targeted projection the r-wide bf16 intermediate
  (2·r bytes per token) and, with dropout, the dropped copy of its input and its mask
  (2 + 1 bytes per input element). Without checkpointing every layer keeps all of it.
* **attention_mask** — sdpa gets the packed rows' block mask as a b·s·s boolean tensor;
  flash-attention's variable-length path needs none.
* **logits** — the loss computes ``lm_head`` and cross-entropy over at most
  ``loss_chunk_tokens`` tokens at a time (``training.model.WeightedLM``): per token of the chunk
  and vocabulary entry 14 bytes at the chunk's backward (bf16 logits 2, their fp32 copy 4, the
  saved fp32 log-softmax 4, its fp32 gradient 4), plus the final hidden states it reads and
  their gradient (2·b·s·h·2).
* **fixed** — CUDA context, NCCL and allocator slack: 2.5 GB (a stated assumption; measure it with
  bench/train_gpu where a GPU is lent).

The plan says whether the total fits the GPU and with what headroom, and sets DeepSpeed's own
estimator beside it (``estimate_zero3_model_states_mem_needs`` with ``zero_init=True``, which is
how the trainer loads: full fine-tuning, model states only, so it shows what LoRA saves).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

GB = 1024**3
FIXED_BYTES = int(2.5 * GB)
LOGIT_BYTES = 14  # per token of a loss chunk × vocabulary entry (module docstring)
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Architecture:
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    tie_word_embeddings: bool = False

    @property
    def kv_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads * self.num_key_value_heads

    def projections(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer in one decoder layer."""
        h, i, kv = self.hidden_size, self.intermediate_size, self.kv_dim
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def layer_tensors(self) -> list[int]:
        """Element counts of one decoder layer's parameter tensors."""
        h, kv = self.hidden_size, self.kv_dim
        weights = [a * b for a, b in self.projections().values()]
        return weights + [h, kv, kv] + [h, h]  # q/k/v biases (Qwen2), two RMSNorms

    def tensors(self) -> list[int]:
        """Element counts of every parameter tensor of the model."""
        embeddings = [self.vocab_size * self.hidden_size] * (1 if self.tie_word_embeddings else 2)
        return self.layer_tensors() * self.num_layers + embeddings + [self.hidden_size]

    def layer_params(self) -> int:
        return sum(self.layer_tensors())

    def total_params(self) -> int:
        return sum(self.tensors())

    def lora_params(self, r: int, targets: tuple[str, ...] = DEFAULT_TARGETS) -> int:
        proj = self.projections()
        return self.num_layers * sum(r * (proj[t][0] + proj[t][1]) for t in targets)

    def largest_module_params(self) -> int:
        """The largest module ZeRO-3 gathers at once: a decoder layer's largest projection, or
        the embedding / lm_head."""
        return max(max(a * b for a, b in self.projections().values()),
                   self.vocab_size * self.hidden_size)

    def largest_layer_params(self) -> int:
        return max(self.layer_params(), self.vocab_size * self.hidden_size)


@dataclass(frozen=True)
class PlanInput:
    arch: Architecture
    lora_r: int
    lora_targets: tuple[str, ...]
    zero_stage: int
    num_nodes: int
    gpus_per_node: int
    gpu_memory_gb: float
    micro_batch_size: int
    seq_len: int
    gradient_checkpointing: bool = True
    prefetch_bucket: float = 5e8
    max_live_parameters: float = 1e9
    persistence_threshold: float = 1e5  # DeepSpeed's default
    reduce_bucket: float = 5e8
    lora_dropout: float = 0.0
    loss_chunk_tokens: int = 2048
    flash_attention: bool = False


@dataclass
class Plan:
    total_params: int
    lora_params: int
    gpus: int
    frozen_weights: int
    zero3_gathered: int
    lora_state: int
    reduce_bucket: int
    activations: int
    attention_mask: int
    logits: int
    fixed: int
    total: int
    gpu_memory: int
    fits: bool
    headroom: int
    deepspeed_full_ft_gpu: int | None = None  # DeepSpeed's estimator, full fine-tuning

    TERMS = ("frozen_weights", "zero3_gathered", "lora_state", "reduce_bucket", "activations",
             "attention_mask", "logits", "fixed")

    def rows(self) -> list[tuple[str, float]]:
        """(component, GiB) for display."""
        return [(n, getattr(self, n) / GB) for n in (*self.TERMS, "total")]

    def as_dict(self) -> dict:
        return asdict(self)


def plan(p: PlanInput) -> Plan:
    a = p.arch
    n = p.num_nodes * p.gpus_per_node
    total, lora = a.total_params(), a.lora_params(p.lora_r, p.lora_targets)
    if p.zero_stage == 3:
        whole = sum(t for t in a.tensors() if t < p.persistence_threshold)
        frozen = 2 * whole + 2 * (total - whole) // n
        gathered = 2 * int(min(p.max_live_parameters,
                               a.largest_module_params() + p.prefetch_bucket))
    else:
        frozen, gathered = 2 * total, 0
    weights, grads, optim = 2 * lora, 2 * lora, 12 * lora
    lora_state = weights + (grads // n if p.zero_stage >= 2 else grads) + (
        optim // n if p.zero_stage >= 1 else optim)
    reduce_bucket = 2 * int(min(p.reduce_bucket, lora))
    tokens = p.micro_batch_size * p.seq_len
    per_token_layer = 2 * (4 * a.hidden_size + 2 * a.kv_dim + 3 * a.intermediate_size)
    proj = a.projections()
    per_token_layer += sum(2 * p.lora_r + (3 * proj[t][0] if p.lora_dropout > 0 else 0)
                           for t in p.lora_targets)
    if p.gradient_checkpointing:
        activations = a.num_layers * tokens * a.hidden_size * 2 + tokens * per_token_layer
    else:
        activations = a.num_layers * tokens * per_token_layer
    attention_mask = 0 if p.flash_attention else p.micro_batch_size * p.seq_len * p.seq_len
    logits = (min(p.loss_chunk_tokens, tokens) * a.vocab_size * LOGIT_BYTES
              + 2 * tokens * a.hidden_size * 2)
    total_bytes = (frozen + gathered + lora_state + reduce_bucket + activations + attention_mask
                   + logits + FIXED_BYTES)
    gpu = int(p.gpu_memory_gb * GB)
    return Plan(total_params=total, lora_params=lora, gpus=n, frozen_weights=frozen,
                zero3_gathered=gathered, lora_state=lora_state, reduce_bucket=reduce_bucket,
                activations=activations, attention_mask=attention_mask, logits=logits,
                fixed=FIXED_BYTES, total=total_bytes, gpu_memory=gpu,
                fits=total_bytes <= gpu, headroom=gpu - total_bytes,
                deepspeed_full_ft_gpu=_deepspeed_estimate(p, total))


def _deepspeed_estimate(p: PlanInput, total: int) -> int | None:
    """DeepSpeed's ZeRO-3 model-states estimate (full fine-tuning, no offload), if installed."""
    import contextlib
    import io

    # DeepSpeed logs to stdout (its accelerator warning at import, the estimate's own lines):
    # `codemill plan --json` must print nothing but the JSON there
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
        except Exception:  # noqa: BLE001 - deepspeed (and torch) are the train extra, optional
            return None
        _, gpu_mem, _ = estimate_zero3_model_states_mem_needs(
            total, p.arch.largest_layer_params(), p.gpus_per_node, p.num_nodes,
            cpu_offload=False, cpu_offload_params=False, zero_init=True)
    return int(gpu_mem)
