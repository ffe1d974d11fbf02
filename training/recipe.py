"""Training recipes: one YAML per model × method under conf/train/, validated once, with overrides.

``load_recipe(path, ["train.lr=2e-4", ...])`` reads the YAML, applies ``dotted.key=value``
overrides (values parsed as YAML) and validates it, with the pipeline's config system
(``udfs.settings``: the same strict models, override parser and error format); a bad key or value
raises ``RecipeError`` (a ``ConfigError``) naming it. A recipe is a path, or the name of one under
``conf/train/`` (``qwen2.5-coder-32b-lora``), which an installed wheel carries. The DeepSpeed JSON a
recipe names is read to learn its ZeRO stage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from udfs.settings import ConfigError, apply_overrides, conf_dir, conf_path, read_yaml, validate
from udfs.settings import Strict as _Strict


class RecipeError(ConfigError):
    """The recipe or an override is invalid; the message names the key."""


class ModelSpec(_Strict):
    name: str  # HF hub name or local path of the base model
    from_config: bool = False  # build from the numbers below instead of loading weights (tests)
    num_layers: int = Field(ge=1)
    hidden_size: int = Field(ge=8)
    intermediate_size: int = Field(ge=8)
    num_attention_heads: int = Field(ge=1)
    num_key_value_heads: int = Field(ge=1)
    vocab_size: int = Field(ge=16)
    tie_word_embeddings: bool = False
    # None: sdpa. flash_attention_2 needs the flash-attn package on a CUDA device (else sdpa,
    # with a warning). Both keep packed conversations apart: training.model explains how.
    attn_implementation: Literal["flash_attention_2", "sdpa", "eager"] | None = None


class LoraSpec(_Strict):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: tuple[Literal["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                  "up_proj", "down_proj"], ...] = (
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class DataSpec(_Strict):
    lakehouse: str = "lakehouse"
    table: str = "gold.sft"
    version: int | None = Field(None, ge=0)
    tokenizer: str
    max_length: int = Field(4096, ge=16)
    packing: bool = True


class TrainSpec(_Strict):
    deepspeed: str = "conf/deepspeed/zero3.json"
    num_nodes: int = Field(1, ge=1)
    gpus_per_node: int = Field(8, ge=1)
    gpu_memory_gb: float = Field(80, gt=0)
    micro_batch_size: int = Field(1, ge=1)
    grad_accum: int = Field(1, ge=1)
    epochs: float = Field(1, gt=0)
    bf16: bool = True
    gradient_checkpointing: bool = True
    lr: float = Field(1e-4, gt=0, le=1e-2)
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    save_steps: int = Field(200, ge=1)
    max_steps: int | None = Field(None, ge=1)  # optimizer steps; None: from epochs
    output_dir: str = "runs/lora"
    seed: int = 0
    dist_timeout_min: int = Field(60, ge=1)  # NCCL/gloo collective timeout
    keep_checkpoints: int = Field(2, ge=1)  # complete checkpoints kept; older ones are removed
    # tokens whose logits exist at once in the loss (training.model.WeightedLM)
    loss_chunk_tokens: int = Field(2048, ge=16)

    def deepspeed_config(self) -> dict[str, Any]:
        path = conf_path(self.deepspeed)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise RecipeError(f"train.deepspeed: {path} does not exist") from None

    def zero_stage(self) -> int:
        return int(self.deepspeed_config().get("zero_optimization", {}).get("stage", 0))

    @property
    def global_batch(self) -> int:
        return self.micro_batch_size * self.grad_accum * self.num_nodes * self.gpus_per_node


class MlflowSpec(_Strict):
    # None: MLFLOW_TRACKING_URI, else the lakehouse's store (udfs.tracking.tracking_uri)
    tracking_uri: str | None = None
    experiment: str = "codemill-lora"
    registered_model: str | None = None  # register the adapter under this name


class Recipe(_Strict):
    model: ModelSpec
    lora: LoraSpec = LoraSpec()
    data: DataSpec
    train: TrainSpec = TrainSpec()
    mlflow: MlflowSpec = MlflowSpec()

    @model_validator(mode="after")
    def _varlen_needs_micro_batch_1(self) -> Recipe:
        # transformers takes flash-attention's variable-length path for packed rows only when
        # the batch holds one row; with more, conversations in a row would attend to each other
        if (self.model.attn_implementation == "flash_attention_2" and self.data.packing
                and self.train.micro_batch_size != 1):
            raise ValueError("train.micro_batch_size: must be 1 with packing and "
                             "model.attn_implementation=flash_attention_2")
        return self


def recipe_path(path: str | Path) -> Path:
    """A recipe file: the path given, or a recipe of that name under ``conf/train/``."""
    p = Path(path)
    if p.exists() or len(p.parts) > 1 or p.suffix in (".yaml", ".yml"):
        return p
    named = conf_dir() / "train" / f"{p.name}.yaml"
    return named if named.exists() else p


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    path = recipe_path(path)
    try:
        data = apply_overrides(read_yaml(path, "recipe"), overrides)
        recipe = validate(Recipe, data, f"{path}: invalid recipe")
        recipe.train.zero_stage()  # the DeepSpeed config must exist
    except RecipeError:
        raise
    except ConfigError as exc:
        raise RecipeError(str(exc)) from None
    return recipe


def plan_input(recipe: Recipe):
    """The memory planner's input for a recipe."""
    from training.plan import Architecture, PlanInput

    m, t = recipe.model, recipe.train
    arch = Architecture(m.num_layers, m.hidden_size, m.intermediate_size, m.num_attention_heads,
                        m.num_key_value_heads, m.vocab_size, m.tie_word_embeddings)
    ds = t.deepspeed_config().get("zero_optimization", {})
    return PlanInput(arch=arch, lora_r=recipe.lora.r, lora_targets=recipe.lora.target_modules,
                     zero_stage=t.zero_stage(), num_nodes=t.num_nodes,
                     gpus_per_node=t.gpus_per_node, gpu_memory_gb=t.gpu_memory_gb,
                     micro_batch_size=t.micro_batch_size, seq_len=recipe.data.max_length,
                     gradient_checkpointing=t.gradient_checkpointing,
                     prefetch_bucket=float(ds.get("stage3_prefetch_bucket_size", 5e8)),
                     max_live_parameters=float(ds.get("stage3_max_live_parameters", 1e9)),
                     persistence_threshold=float(ds.get("stage3_param_persistence_threshold",
                                                        1e5)),
                     reduce_bucket=float(ds.get("reduce_bucket_size", 5e8)),
                     lora_dropout=recipe.lora.dropout, loss_chunk_tokens=t.loss_chunk_tokens,
                     flash_attention=m.attn_implementation == "flash_attention_2")
