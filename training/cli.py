"""The ``codemill`` training commands: memory plan, training, multi-node launch, merge, eval.

    codemill plan --recipe qwen2.5-coder-32b-lora            # per-GPU memory plan
    codemill train --recipe tiny-cpu --set data.tokenizer=tokenizers/tiny
    codemill launch --recipe qwen2.5-coder-32b-lora --nodes 4 --hostfile hosts.txt --write
    codemill eval --recipe tiny-cpu --adapter runs/tiny-cpu/adapter --limit 20
    codemill merge --recipe tiny-cpu --adapter runs/tiny-cpu/adapter --out merged

``jobs.cli`` adds these commands to the one ``codemill`` command. Nothing here imports torch
until a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(add_completion=False)
console = Console()
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override: dotted.key=value")]
RecipeOpt = Annotated[str, typer.Option("--recipe", help="conf/train/<name>.yaml, or a name")]


@app.command()
def plan(recipe: RecipeOpt,
         overrides: SetOpt = None,
         as_json: Annotated[bool, typer.Option("--json", help="print the plan as JSON")] = False,
         ) -> None:
    """Per-GPU memory of a LoRA recipe under its DeepSpeed ZeRO stage, and whether it fits."""
    import json

    from training.plan import GB
    from training.plan import plan as make_plan
    from training.recipe import RecipeError, load_recipe, plan_input

    try:
        r = load_recipe(recipe, list(overrides or []))
    except RecipeError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    p = make_plan(plan_input(r))
    if as_json:
        print(json.dumps(p.as_dict(), indent=2))
        return
    t = r.train
    console.print(f"{r.model.name}: LoRA r={r.lora.r} on {t.num_nodes}×{t.gpus_per_node} GPUs "
                  f"({t.gpu_memory_gb:g} GB), ZeRO-{t.zero_stage()}, micro-batch "
                  f"{t.micro_batch_size} × {r.data.max_length} tokens")
    t_ = Table()
    t_.add_column("per GPU", no_wrap=True)
    t_.add_column("GiB", justify="right")
    for name, gib in p.rows():
        t_.add_row(name.replace("_", " "), f"{gib:.2f}")
    console.print(t_)
    console.print(f"parameters {p.total_params / 1e9:.2f} B, trainable (LoRA) "
                  f"{p.lora_params / 1e6:.1f} M ({100 * p.lora_params / p.total_params:.2f} %); "
                  f"global batch {t.global_batch} sequences")
    verdict = "fits" if p.fits else "does NOT fit"
    console.print(f"{verdict}: {p.total / GB:.1f} of {p.gpu_memory / GB:.1f} GiB, headroom "
                  f"{p.headroom / GB:.1f} GiB")
    if p.deepspeed_full_ft_gpu is not None:
        console.print(f"DeepSpeed's estimator (full fine-tuning, model states only): "
                      f"{p.deepspeed_full_ft_gpu / GB:.1f} GiB per GPU")
    else:
        console.print("DeepSpeed's estimator: not installed here (pip install '.\\[train]')")


def _recipe_or_exit(recipe: str, overrides):
    from training.recipe import RecipeError, load_recipe

    try:
        return load_recipe(recipe, list(overrides or []))
    except RecipeError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None


def _launch_commands(recipe_path: str, recipe, nodes: int, overrides,
                     hostfile: str) -> tuple[str, list[str]]:
    """(hostfile text, commands) for ``nodes`` nodes of ``gpus_per_node`` GPUs."""
    import shlex

    gpus = recipe.train.gpus_per_node
    sets = " ".join(f"--set {shlex.quote(o)}" for o in [*(overrides or []),
                                                        f"train.num_nodes={nodes}"])
    text = "".join(f"node{i} slots={gpus}\n" for i in range(nodes))
    script = f"training/train.py --recipe {recipe_path} {sets}"
    return text, [
        f"deepspeed --hostfile {shlex.quote(hostfile)} --num_nodes {nodes} --num_gpus {gpus} "
        f"{script}",
        f"torchrun --nnodes {nodes} --nproc_per_node {gpus} --rdzv_backend c10d "
        f"--rdzv_endpoint node0:29500 {script}   # on every node",
    ]


# Exported to every rank on every node. DeepSpeed's pdsh launcher passes on only variables whose
# names start with NCCL, MLFLOW, PYTHON, MV2 or UCX, plus the lines of a `.deepspeed_env` file in
# the launch folder or $HOME: TORCH_NCCL_* and HF_* reach the remote ranks only through that file.
LAUNCH_ENV = {
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",  # a failed collective ends the job, no silent hang
    "NCCL_DEBUG": "WARN",
    "NCCL_IB_DISABLE": "0",  # InfiniBand when present
    "NCCL_SOCKET_IFNAME": "^lo,docker",
    "HF_HUB_OFFLINE": "1",  # the base model is read from shared storage, never fetched per rank
    "TOKENIZERS_PARALLELISM": "false",
}


@app.command()
def train(recipe: RecipeOpt,
          overrides: SetOpt = None) -> None:
    """Train on this machine: torchrun with the recipe's GPUs per node (CPU ranks without CUDA)."""
    import os
    import shutil
    import subprocess
    import sys

    r = _recipe_or_exit(recipe, overrides)
    env = dict(os.environ)
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        console.print("[red]training needs the train extra: pip install '.\\[train]'[/red]")
        raise typer.Exit(2) from None
    if not cuda:
        env["DS_ACCELERATOR"] = "cpu"
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    cmd = [torchrun, "--nproc_per_node", str(r.train.gpus_per_node),
           str(Path(__file__).resolve().parents[1] / "training" / "train.py"),
           "--recipe", recipe] + [a for o in (overrides or []) for a in ("--set", o)]
    console.print(" ".join(cmd))
    raise typer.Exit(subprocess.call(cmd, env=env))


@app.command()
def launch(recipe: RecipeOpt,
           nodes: Annotated[int, typer.Option("--nodes", min=1)] = 1,
           overrides: SetOpt = None,
           hostfile: Annotated[str, typer.Option(help="the hostfile the commands use")]
           = "conf/hostfile",
           write: Annotated[bool, typer.Option(
               "--write", help="write the hostfile and ./.deepspeed_env")] = False,
           ) -> None:
    """Multi-node commands, hostfile and launcher environment for a recipe."""
    r = _recipe_or_exit(recipe, overrides)
    text, commands = _launch_commands(recipe, r, nodes, overrides, hostfile)
    env_text = "".join(f"{k}={v}\n" for k, v in LAUNCH_ENV.items())
    if write:
        Path(hostfile).parent.mkdir(parents=True, exist_ok=True)
        Path(hostfile).write_text(text)
        Path(".deepspeed_env").write_text(env_text)
    state = "written" if write else "write with --write"
    print(f"# hostfile {hostfile} ({state}): one line per node, slots = GPUs\n{text}")
    print(f"# ./.deepspeed_env ({state}): the deepspeed launcher exports these on every node "
          f"(with torchrun, export them yourself)\n{env_text}")
    print(f"# collective timeout: train.dist_timeout_min = {r.train.dist_timeout_min} min "
          "(the recipe)")
    print(f"# {r.train.output_dir} and {r.data.lakehouse} must be on a filesystem every node "
          "mounts (checkpoints, the token cache and the adapter are shared)")
    for c in commands:
        print(c)


@app.command()
def merge(recipe: RecipeOpt,
          adapter: Annotated[str, typer.Option(help="LoRA adapter folder")],
          out: Annotated[str, typer.Option("--out", help="folder for the merged model")],
          overrides: SetOpt = None) -> None:
    """Merge a LoRA adapter into its base model and save the result (HF format) for export."""
    from training.train import merge_adapter

    r = _recipe_or_exit(recipe, overrides)
    console.print(f"merged model saved to {merge_adapter(r, adapter, out)}")


@app.command("eval")
def eval_(recipe: RecipeOpt,
          adapter: Annotated[Optional[str], typer.Option(help="LoRA adapter folder")] = None,
          limit: Annotated[Optional[int], typer.Option(help="HumanEval problems (default all)")]
          = None,
          max_new_tokens: Annotated[int, typer.Option()] = 256,
          prompt: Annotated[str, typer.Option(
              help="chat: through the chat template (instruction-tuned models); raw: the bare "
                   "HumanEval prompt (base models)")] = "chat",
          allow_unsandboxed: Annotated[bool, typer.Option(
              "--allow-unsandboxed", help="run generated code even where neither bwrap nor "
                                          "unshare can isolate it")] = False,
          mlflow_run: Annotated[Optional[str], typer.Option(
              help="MLflow run to log the metrics to (default: the training run that wrote "
                   "the adapter, from run.json beside it; 'none': do not log)")] = None,
          overrides: SetOpt = None) -> None:
    """Perplexity on gold.sft's eval split and HumanEval pass@1 (code run in a sandbox), logged
    to the adapter's training run."""
    import json
    import tempfile

    from training.data import prepare
    from training.evaluate import greedy, humaneval, load_model, perplexity
    from udfs.chatml import load_tokenizer

    if prompt not in ("chat", "raw"):
        console.print(f"[red]--prompt: chat or raw, not {prompt!r}[/red]")
        raise typer.Exit(2)
    r = _recipe_or_exit(recipe, overrides)
    tok = load_tokenizer(r.data.tokenizer)
    model = load_model(r, adapter)
    packed, version, _ = prepare(r.data.lakehouse, r.data.table, r.data.version, tok,
                                 r.data.tokenizer, r.data.max_length,
                                 Path(tempfile.mkdtemp(prefix="codemill-eval-")), split="eval")
    ppl, tokens = perplexity(model, packed)
    he = humaneval(greedy(model, tok, max_new_tokens, prompt=prompt), limit=limit,
                   allow_unsandboxed=allow_unsandboxed)
    logged = _log_eval(r, adapter, mlflow_run, version, {
        "eval.perplexity": ppl, "eval.tokens": float(tokens),
        "humaneval.pass_at_1": he.pass_at_1, "humaneval.problems": float(he.problems)})
    print(json.dumps({"table": r.data.table, "version": version, "eval_tokens": tokens,
                      "perplexity": ppl, "humaneval_problems": he.problems,
                      "humaneval_pass@1": he.pass_at_1, "mlflow_run": logged}))


def _log_eval(recipe, adapter: str | None, run_id: str | None, version: int,
              metrics: dict[str, float]) -> str | None:
    """Log ``metrics`` to the MLflow run ``run_id``, or to the training run that wrote
    ``adapter`` (``<output_dir>/run.json`` beside ``<output_dir>/adapter``), in the store
    training uses; the run's id, or None where there is none to log to."""
    import json

    from mlflow import MlflowClient

    from udfs.tracking import tracking_uri

    if run_id == "none":
        return None
    if run_id is None and adapter is not None:
        summary = Path(adapter).parent / "run.json"
        if summary.exists():
            run_id = json.loads(summary.read_text()).get("mlflow_run_id")
    if run_id is None:
        return None
    client = MlflowClient(tracking_uri(recipe.data.lakehouse, recipe.mlflow.tracking_uri))
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    client.set_tag(run_id, "eval.data", f"{recipe.data.table}@{version}")
    return run_id
