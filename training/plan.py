"""Per-GPU memory plan for LoRA fine-tuning under DeepSpeed ZeRO (``codemill plan``).

Parameter counts come from the architecture (a Qwen2 decoder: attention with q/k/v biases and
grouped-query key/value heads, SwiGLU MLP, RMSNorm, untied embeddings unless stated); the LoRA
count is r·(in + out) for every targeted projection of every layer.

Memory per GPU, N = nodes × GPUs per node:

* **frozen weights** — bf16, 2 B/param; ZeRO-3 shards them (2P/N), stages 0–2 keep a full copy.
* **ZeRO-3 gathered working set** — the largest layer in bf16 plus the prefetch bucket
  (``stage3_prefetch_bucket_size`` elements, bf16), capped by ``stage3_max_live_parameters``.
* **LoRA trainable state** — mixed-precision Adam, 16 B/param (ZeRO paper, Rajbhandari et al. 2020,
  §3.1: 2 bf16 weights + 2 bf16 grads + 12 fp32 master weights, momentum, variance); stage ≥ 1
  shards the 12, stage ≥ 2 the grads, stage 3 the weights.
* **activations** — with gradient checkpointing each layer keeps its input (b·s·h bf16), and one
  layer at a time is recomputed with its full activations: per token 2·(4h + 2·kv + 3i) bytes
  (normed input, q/k/v, attention output, o-proj input, MLP input, gate, up and gated product;
  flash attention keeps no s² scores — after Korthikanti et al. 2022, "Reducing activation
  recomputation", adapted to GQA and SwiGLU). Without checkpointing every layer keeps them.
* **logits** — b·s·V in bf16 plus the fp32 copy the loss takes: 6 B per token per vocab entry.
* **fixed** — CUDA context, NCCL and allocator slack: 2.5 GB (a stated assumption; measure it with
  bench/train_gpu where a GPU is lent).

The plan says whether the total fits the GPU and with what headroom, and sets DeepSpeed's own
estimator beside it (``estimate_zero3_model_states_mem_needs``: full fine-tuning, model states only,
so it shows what LoRA saves).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

GB = 1024**3
FIXED_BYTES = int(2.5 * GB)
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

    def layer_params(self) -> int:
        weights = sum(a * b for a, b in self.projections().values())
        biases = self.hidden_size + 2 * self.kv_dim  # Qwen2: q, k, v have biases
        norms = 2 * self.hidden_size
        return weights + biases + norms

    def total_params(self) -> int:
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * self.layer_params() + embeddings + self.hidden_size

    def lora_params(self, r: int, targets: tuple[str, ...] = DEFAULT_TARGETS) -> int:
        proj = self.projections()
        return self.num_layers * sum(r * (proj[t][0] + proj[t][1]) for t in targets)

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


@dataclass
class Plan:
    total_params: int
    lora_params: int
    gpus: int
    frozen_weights: int
    zero3_gathered: int
    lora_state: int
    activations: int
    logits: int
    fixed: int
    total: int
    gpu_memory: int
    fits: bool
    headroom: int
    deepspeed_full_ft_gpu: int | None = None  # DeepSpeed's estimator, full fine-tuning

    def rows(self) -> list[tuple[str, float]]:
        """(component, GiB) for display."""
        names = ("frozen_weights", "zero3_gathered", "lora_state", "activations", "logits",
                 "fixed", "total")
        return [(n, getattr(self, n) / GB) for n in names]

    def as_dict(self) -> dict:
        return asdict(self)


def plan(p: PlanInput) -> Plan:
    a = p.arch
    n = p.num_nodes * p.gpus_per_node
    total, lora = a.total_params(), a.lora_params(p.lora_r, p.lora_targets)
    frozen = 2 * total // n if p.zero_stage == 3 else 2 * total
    gathered = 0
    if p.zero_stage == 3:
        gathered = 2 * int(min(p.max_live_parameters, a.layer_params() + p.prefetch_bucket))
    weights, grads, optim = 2 * lora, 2 * lora, 12 * lora
    lora_state = (weights // n if p.zero_stage >= 3 else weights) + (
        grads // n if p.zero_stage >= 2 else grads) + (optim // n if p.zero_stage >= 1 else optim)
    tokens = p.micro_batch_size * p.seq_len
    per_token_layer = 2 * (4 * a.hidden_size + 2 * a.kv_dim + 3 * a.intermediate_size)
    if p.gradient_checkpointing:
        activations = a.num_layers * tokens * a.hidden_size * 2 + tokens * per_token_layer
    else:
        activations = a.num_layers * tokens * per_token_layer
    logits = tokens * a.vocab_size * 6
    total_bytes = frozen + gathered + lora_state + activations + logits + FIXED_BYTES
    gpu = int(p.gpu_memory_gb * GB)
    return Plan(total_params=total, lora_params=lora, gpus=n, frozen_weights=frozen,
                zero3_gathered=gathered, lora_state=lora_state, activations=activations,
                logits=logits, fixed=FIXED_BYTES, total=total_bytes, gpu_memory=gpu,
                fits=total_bytes <= gpu, headroom=gpu - total_bytes,
                deepspeed_full_ft_gpu=_deepspeed_estimate(p, total))


def _deepspeed_estimate(p: PlanInput, total: int) -> int | None:
    """DeepSpeed's ZeRO-3 model-states estimate (full fine-tuning, no offload), if installed."""
    try:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    except Exception:  # noqa: BLE001 - deepspeed (and torch) are the train extra, optional here
        return None
    _, gpu_mem, _ = estimate_zero3_model_states_mem_needs(
        total, p.arch.largest_layer_params(), p.gpus_per_node, p.num_nodes,
        cpu_offload=False, cpu_offload_params=False, zero_init=True)
    return int(gpu_mem)
