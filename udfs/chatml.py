"""ChatML as Qwen2.5-Coder uses it, token counting, and a small local tokenizer with its specials.

Shared by ``jobs.build_sft`` (token lengths) and ``training/`` (tokenization, the tiny CPU recipe).

``CHAT_TEMPLATE`` renders messages the way Qwen2.5's own template does for this data:
``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, assistant tool calls appended to the
content as ``<tool_call>\\n{"name": …, "arguments": …}\\n</tool_call>`` (arguments through
``tojson``, as Qwen2.5's template writes them), and
``<|im_start|>assistant\\n`` as the generation prompt. On a machine with the real tokenizer
(``Qwen/Qwen2.5-Coder-32B-Instruct``) its own template is used instead; this one is for tokenizers
trained here, which have none.

``train_tokenizer`` trains a byte-level BPE on local text with Qwen2.5-Coder's special tokens
(names from its tokenizer_config: ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``, the FIM and
repository tokens), so tests and the tiny recipe tokenize exactly the strings the real model sees.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from udfs.fim import FILE_SEP, FIM_MIDDLE, FIM_PAD, FIM_PREFIX, FIM_SUFFIX, REPO_NAME

IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
SPECIAL_TOKENS: tuple[str, ...] = (ENDOFTEXT, IM_START, IM_END, FIM_PREFIX, FIM_MIDDLE,
                                   FIM_SUFFIX, FIM_PAD, REPO_NAME, FILE_SEP, "<tool_call>",
                                   "</tool_call>")

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') }}"
    "{%- if message.get('tool_calls') %}"
    "{%- for call in message['tool_calls'] %}"
    "{{- '\\n<tool_call>\\n{\"name\": \"' + call['function']['name'] + '\", \"arguments\": '"
    " + (call['function']['arguments'] | tojson) + '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def clean_messages(messages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as chat templates expect them: no ``tool_calls: None`` keys."""
    out = []
    for m in messages:
        item = {"role": m["role"], "content": m.get("content") or ""}
        if m.get("tool_calls"):
            item["tool_calls"] = [
                {"id": c["id"], "type": c["type"],
                 "function": {"name": c["function"]["name"],
                              "arguments": c["function"]["arguments"]}}
                for c in m["tool_calls"]]
        out.append(item)
    return out


def template_messages(messages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as a chat template is given them: ``clean_messages`` with each tool call's
    ``arguments`` decoded from gold.sft's JSON string into the object it encodes. Chat templates
    (Qwen2.5's, and ``CHAT_TEMPLATE``) apply ``tojson`` to the arguments themselves; given the
    string they would write it a second time, quoted and escaped, and the model would learn
    double-encoded arguments."""
    out = clean_messages(messages)
    for m in out:
        for call in m.get("tool_calls", ()):
            raw = call["function"]["arguments"]
            if isinstance(raw, str):
                try:
                    call["function"]["arguments"] = json.loads(raw)
                except ValueError:
                    pass  # not JSON: the template shows the string as it is
    return out


def _tojson(value: Any, ensure_ascii: bool = False, indent=None, separators=None,
            sort_keys: bool = False) -> str:
    # transformers' chat-template filter, not Jinja's own tojson: Jinja's escapes <, >, & and '
    # (HTML-safe) and sorts keys, which would change code inside tool-call arguments
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def render(messages: Iterable[dict[str, Any]]) -> str:
    """The ChatML text of ``messages`` with ``CHAT_TEMPLATE`` (no tokenizer needed), the same
    text ``apply_chat_template`` gives with it."""
    from jinja2 import Environment

    env = Environment()
    env.filters["tojson"] = _tojson
    return env.from_string(CHAT_TEMPLATE).render(
        messages=template_messages(messages), add_generation_prompt=False)


def load_tokenizer(name_or_path: str):
    """A HF tokenizer by hub name or local path; gets ``CHAT_TEMPLATE`` if it has none."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name_or_path)
    if not getattr(tok, "chat_template", None):
        tok.chat_template = CHAT_TEMPLATE
    return tok


def count_tokens(tokenizer, conversations: list[list[dict[str, Any]]]) -> list[int]:
    """Tokens of each conversation as the chat template renders it, in one batched encode."""
    texts = [tokenizer.apply_chat_template(template_messages(c), tokenize=False) for c in
             conversations]
    if not texts:
        return []
    enc = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [len(ids) for ids in enc]


def train_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 2048) -> Path:
    """Train a byte-level BPE tokenizer with Qwen2.5-Coder's special tokens and save it (HF
    format, with ``CHAT_TEMPLATE``) to ``out_dir``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=IM_END, pad_token=ENDOFTEXT,
                                   bos_token=None, unk_token=None,
                                   additional_special_tokens=list(SPECIAL_TOKENS[1:]))
    fast.chat_template = CHAT_TEMPLATE
    out = Path(out_dir)
    fast.save_pretrained(str(out))
    (out / "codemill_tokenizer.json").write_text(json.dumps(
        {"trained_by": "udfs.chatml.train_tokenizer", "vocab_size": vocab_size,
         "special_tokens": list(SPECIAL_TOKENS)}, indent=2) + "\n")
    return out
