"""Fill-in-the-middle text formats with Qwen2.5-Coder's special tokens.

Shared by ``jobs.split`` (which renders gold.samples) and ``training/`` (which must tokenize the same
strings), so the token spellings live here only.

Orders, after Bavarian et al., "Efficient Training of Language Models to Fill in the Middle"
(arXiv:2207.14255), as StarCoder's Megatron-LM implements them (``permute`` in
bigcode-project/Megatron-LM ``gpt_dataset.py``; Megatron-Core's ``GPTFIMDataset`` documents the same):

* PSM: ``<|fim_prefix|>prefix<|fim_suffix|>suffix<|fim_middle|>middle``
* SPM: ``<|fim_prefix|><|fim_suffix|>suffix<|fim_middle|>prefix middle`` — the paper's SPM variant
  where the prefix directly precedes the middle, so the model continues the prefix naturally.

StarCoder's defaults are ``fim_rate`` 0.5 (share of documents that become FIM) and ``fim_spm_rate``
0.5 (share of those in SPM order).

Repository-level form (Qwen2.5-Coder README, "repository level code completion", and the technical
report arXiv:2409.12186 §3): ``<|repo_name|>name\\n<|file_sep|>path\\ncontent...`` with the FIM file
last, its content in PSM form.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

FIM_PREFIX = "<|fim_prefix|>"
FIM_SUFFIX = "<|fim_suffix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_PAD = "<|fim_pad|>"
REPO_NAME = "<|repo_name|>"
FILE_SEP = "<|file_sep|>"
ENDOFTEXT = "<|endoftext|>"

FIM_TOKENS: tuple[str, ...] = (FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD, REPO_NAME, FILE_SEP)

FimMode = Literal["psm", "spm"]


def render_fim(prefix: str, middle: str, suffix: str, mode: FimMode = "psm") -> str:
    """One FIM training string in ``mode`` order (see the module docstring)."""
    if mode == "psm":
        return f"{FIM_PREFIX}{prefix}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}{middle}"
    if mode == "spm":
        return f"{FIM_PREFIX}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}{prefix}{middle}"
    raise ValueError(f"FIM mode must be psm or spm, got {mode!r}")


def _file_block(path: str, content: str) -> str:
    # A file's content ends with a newline before the next separator, as in Qwen's examples.
    return f"{FILE_SEP}{path}\n{content}" + ("" if content.endswith("\n") or not content else "\n")


def render_repo(repo: str, files: Iterable[tuple[str, str]]) -> str:
    """A repository as one document: ``<|repo_name|>repo`` then each ``(path, content)``."""
    return f"{REPO_NAME}{repo}\n" + "".join(_file_block(p, c) for p, c in files)


def render_repo_fim(repo: str, context_files: Iterable[tuple[str, str]], path: str,
                    prefix: str, middle: str, suffix: str, mode: FimMode = "psm") -> str:
    """Repository-level FIM: other files of the repo first, the FIM file last."""
    return (render_repo(repo, context_files) + f"{FILE_SEP}{path}\n"
            + render_fim(prefix, middle, suffix, mode))


def contains_special_tokens(text: str) -> bool:
    """True if ``text`` already holds one of the FIM/repo tokens (it would confuse training)."""
    return any(tok in text for tok in FIM_TOKENS) or ENDOFTEXT in text
