"""gold.sft at a pinned Delta version → token ids, assistant-only labels, packed sequences.

No Spark on this path: the table is read with ``deltalake`` at an explicit version (the latest when
none is given, then pinned: the version read is returned and logged with the run).

Tokenization: the conversation is rendered once with the tokenizer's own chat template (Qwen2.5's
on a machine that has it, ``udfs.chatml.CHAT_TEMPLATE`` otherwise) and tokenized with character
offsets. **Labels** are −100 everywhere except the tokens inside an assistant turn's content (tool
calls included) and its ``<|im_end|>``, found from the ChatML markers
``<|im_start|>assistant\\n`` … ``<|im_end|>``: the loss covers only what the model should say and
where it should stop.

Packing: conversations are packed greedily, in table order, into sequences of at most
``max_length`` tokens (a conversation longer than that is cut to it, and counted; one left with
no label token by the cut, its answer beyond ``max_length``, is left out, and counted: it would
only add steps of zero loss and zero gradient). Position ids
restart at 0 for every conversation, the first label of each is −100 (no prediction across a
boundary), and ``seq_lens`` gives the conversation lengths. Without a KV cache, transformers keeps
the conversations of a row apart from the restarting position ids, with flash-attention's
variable-length path and with sdpa's block mask alike (``training.model``).

**Sample weights** (gold.sft's ``weight``, mean 1) are given per token to the loss: the training
loss is the weighted mean of per-token cross-entropy over the label tokens of a whole optimizer
step, Σ wₜ·ℓₜ / Σ [label ≠ −100] (``training.train.train_step``).

Pre-tokenized data is cached as one ``.npz`` per (table version, tokenizer, max length, split), so
every rank of a multi-node job reads the same file instead of tokenizing (the output folder must be
on a shared filesystem; rank 0 writes it, the others wait for it).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

IGNORE = -100


def read_sft(lakehouse: str, table: str = "gold.sft", version: int | None = None,
             split: str | None = "train") -> tuple[list[dict[str, Any]], int]:
    """Rows (sft_id, messages, weight) of ``table`` at ``version`` and the version read."""
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    layer, _, name = table.partition(".")
    path = str(Path(lakehouse) / layer / name) if "://" not in lakehouse else \
        f"{lakehouse.rstrip('/')}/{layer}/{name}"
    dt = DeltaTable(path, version=version) if version is not None else DeltaTable(path)
    dataset = dt.to_pyarrow_dataset()
    flt = ds.field("split") == split if split else None
    rows = dataset.to_table(columns=["sft_id", "messages", "weight"], filter=flt).to_pylist()
    rows.sort(key=lambda r: r["sft_id"])  # a stable order, whatever the file layout
    return rows, dt.version()


_ASSISTANT = re.compile(r"<\|im_start\|>assistant\n")
_END = "<|im_end|>"


def tokenize_conversation(tokenizer, messages: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) with labels only on assistant content and its end token."""
    from udfs.chatml import template_messages

    text = tokenizer.apply_chat_template(template_messages(messages), tokenize=False)
    spans = []
    for m in _ASSISTANT.finditer(text):
        end = text.find(_END, m.end())
        spans.append((m.end(), len(text) if end < 0 else end + len(_END)))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels, k = [], 0
    for tid, (a, b) in zip(ids, offsets):
        while k < len(spans) and spans[k][1] <= a:
            k += 1
        inside = k < len(spans) and spans[k][0] <= a and b <= spans[k][1]
        labels.append(tid if inside else IGNORE)
    return ids, labels


@dataclass
class Packed:
    input_ids: np.ndarray  # (n_seq, max_length) int32, padded with pad_id
    labels: np.ndarray  # (n_seq, max_length) int32, IGNORE at padding and sample starts
    position_ids: np.ndarray  # (n_seq, max_length) int32, restarting per conversation
    token_weights: np.ndarray  # (n_seq, max_length) float32, the sample's weight on its tokens
    seq_lens: list[list[int]]  # conversation lengths inside each sequence
    truncated: int  # conversations cut to max_length
    unlabeled: int = 0  # conversations left out: no label token within max_length

    def save(self, path: Path) -> None:
        np.savez_compressed(path, input_ids=self.input_ids, labels=self.labels,
                            position_ids=self.position_ids, token_weights=self.token_weights,
                            seq_lens=json.dumps(self.seq_lens), truncated=self.truncated,
                            unlabeled=self.unlabeled)

    @classmethod
    def load(cls, path: Path) -> Packed:
        z = np.load(path)
        return cls(z["input_ids"], z["labels"], z["position_ids"], z["token_weights"],
                   json.loads(str(z["seq_lens"])), int(z["truncated"]),
                   int(z["unlabeled"]) if "unlabeled" in z.files else 0)


def pack(examples: list[tuple[list[int], list[int], float]], max_length: int,
         pad_id: int) -> Packed:
    """Greedy packing in order (see the module docstring)."""
    seqs: list[list[tuple[list[int], list[int], float]]] = [[]]
    used = 0
    truncated = unlabeled = 0
    for ids, labels, weight in examples:
        if len(ids) > max_length:
            ids, labels = ids[:max_length], labels[:max_length]
            truncated += 1
        if all(label == IGNORE for label in labels[1:]):  # the first is ignored below
            unlabeled += 1
            continue
        if used + len(ids) > max_length and seqs[-1]:
            seqs.append([])
            used = 0
        seqs[-1].append((ids, labels, weight))
        used += len(ids)
    n = len(seqs) if seqs[-1] else len(seqs) - 1
    input_ids = np.full((n, max_length), pad_id, dtype=np.int32)
    out_labels = np.full((n, max_length), IGNORE, dtype=np.int32)
    positions = np.zeros((n, max_length), dtype=np.int32)
    weights = np.zeros((n, max_length), dtype=np.float32)
    lens: list[list[int]] = []
    for row, items in enumerate(seqs[:n]):
        at = 0
        lens.append([])
        for ids, labels, weight in items:
            k = len(ids)
            input_ids[row, at:at + k] = ids
            lab = np.asarray(labels, dtype=np.int32)
            lab[0] = IGNORE  # never predict across a boundary
            out_labels[row, at:at + k] = lab
            positions[row, at:at + k] = np.arange(k, dtype=np.int32)
            weights[row, at:at + k] = weight
            lens[-1].append(k)
            at += k
    return Packed(input_ids, out_labels, positions, weights, lens, truncated, unlabeled)


def table_version(lakehouse: str, table: str) -> int:
    """The latest Delta version of ``table`` (``layer.name``) under ``lakehouse``."""
    from deltalake import DeltaTable

    layer, _, name = table.partition(".")
    return DeltaTable(str(Path(lakehouse) / layer / name)).version()


def cache_key(table_path: str, version: int, tokenizer_name: str, max_length: int,
              split: str | None) -> str:
    blob = json.dumps([table_path, version, tokenizer_name, max_length, split])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prepare(lakehouse: str, table: str, version: int | None, tokenizer, tokenizer_name: str,
            max_length: int, cache_dir: Path, split: str | None = "train",
            rank: int = 0, wait_s: float = 3600.0) -> tuple[Packed, int, Path]:
    """Read, tokenize, pack and cache (rank 0), or wait for rank 0's cache (other ranks).

    Returns the packed data, the Delta version it came from, and the cache file.
    """
    import time

    cache_dir.mkdir(parents=True, exist_ok=True)
    if version is None:  # pin the latest version once, so every rank reads the same one
        version = table_version(lakehouse, table)
    path = cache_dir / f"sft-{cache_key(lakehouse + '/' + table, version, tokenizer_name, max_length, split)}.npz"
    if rank != 0:
        deadline = time.monotonic() + wait_s
        while not path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"rank {rank}: no tokenized cache at {path} after {wait_s} s")
            time.sleep(1.0)
        return Packed.load(path), version, path
    if path.exists():
        return Packed.load(path), version, path
    rows, read = read_sft(lakehouse, table, version, split)
    examples = []
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    # a bar in a terminal (minutes for a large table); nothing in a log file
    console = Console(stderr=True)
    with Progress(TextColumn("tokenizing {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console, disable=not console.is_terminal,
                  transient=True) as bar:
        task = bar.add_task(f"{table}@{read}", total=len(rows))
        for r in rows:
            ids, labels = tokenize_conversation(tokenizer, r["messages"])
            examples.append((ids, labels, float(r["weight"] if r["weight"] is not None else 1.0)))
            bar.advance(task)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    packed = pack(examples, max_length, pad)
    tmp = path.with_suffix(".tmp.npz")
    packed.save(tmp)
    tmp.rename(path)  # atomic: other ranks never see half a file
    return packed, read, path
