"""training.data: assistant-only labels, packing boundaries, pinned reads and the token cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from training.data import IGNORE, pack, prepare, read_sft, tokenize_conversation
from udfs.chatml import load_tokenizer, train_tokenizer

FIXTURES = Path(__file__).resolve().parents[1] / "udfs" / "fixtures" / "split"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "tiny"
    return load_tokenizer(str(train_tokenizer(
        [p.read_text() for p in FIXTURES.iterdir()], out, 500)))


def conv(user: str, answer: str, calls=None) -> list[dict]:
    return [{"role": "system", "content": "Be precise.", "tool_calls": None},
            {"role": "user", "content": user, "tool_calls": None},
            {"role": "assistant", "content": answer, "tool_calls": calls}]


def test_labels_cover_only_assistant_content_and_its_end(tok):
    ids, labels = tokenize_conversation(tok, conv("Write add.", "def add(a, b):\n    return a + b"))
    assert len(ids) == len(labels)
    learned = [t for t, lab in zip(ids, labels) if lab != IGNORE]
    assert tok.decode(learned) == "def add(a, b):\n    return a + b<|im_end|>"
    assert all(lab in (IGNORE, t) for t, lab in zip(ids, labels))
    # the whole conversation is exactly the chat template's rendering
    assert tok.decode(ids) == tok.apply_chat_template(
        [{"role": m["role"], "content": m["content"]} for m in conv(
            "Write add.", "def add(a, b):\n    return a + b")], tokenize=False)


def test_tool_calls_are_learned_too(tok):
    calls = [{"id": "c1", "type": "function",
              "function": {"name": "write_file", "arguments": '{"path": "t.py"}'}}]
    ids, labels = tokenize_conversation(tok, conv("Test it.", "Writing the test.", calls))
    learned = tok.decode([t for t, lab in zip(ids, labels) if lab != IGNORE])
    assert learned.startswith("Writing the test.\n<tool_call>\n")
    assert '"name": "write_file"' in learned and learned.endswith("</tool_call><|im_end|>")


# the assistant/tool-call part of Qwen2.5's chat template (tokenizer_config.json of
# Qwen2.5-Coder-*-Instruct): it applies tojson to the arguments itself
QWEN_STYLE_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' %}"
    "{{- '<|im_start|>' + message.role }}"
    "{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}"
    "{%- for tool_call in message.tool_calls %}"
    "{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}"
    "{{- '\\n<tool_call>\\n{\"name\": \"' }}{{- tool_call.name }}{{- '\", \"arguments\": ' }}"
    "{{- tool_call.arguments | tojson }}{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}")


def test_tool_call_arguments_are_encoded_once_by_a_tojson_template(tok):
    calls = [{"id": "c1", "type": "function", "function": {
        "name": "write_file", "arguments": '{"path": "t.py", "content": "assert f(1) < 2\\n"}'}}]
    messages = conv("Test it.", "Writing the test.", calls)
    expected = '"arguments": {"path": "t.py", "content": "assert f(1) < 2\\n"}}'
    from udfs.chatml import CHAT_TEMPLATE, render

    for template in (QWEN_STYLE_TEMPLATE, CHAT_TEMPLATE):
        tok.chat_template = template
        try:
            ids, labels = tokenize_conversation(tok, messages)
        finally:
            tok.chat_template = CHAT_TEMPLATE
        text = tok.decode(ids)
        assert text.count(expected) == 1, text
        assert '\\"path\\"' not in text  # not a JSON string holding JSON
        learned = tok.decode([t for t, lab in zip(ids, labels) if lab != IGNORE])
        assert expected in learned
    assert render(messages).count(expected) == 1


def test_packing_keeps_conversations_apart():
    a = ([1, 2, 3, 4], [IGNORE, IGNORE, 3, 4], 2.0)
    b = ([5, 6, 7], [IGNORE, 6, 7], 0.5)
    c = ([8, 9, 10, 11, 12, 13], [IGNORE, 9, 10, 11, 12, 13], 1.0)
    d = (list(range(20, 32)), list(range(20, 32)), 1.0)  # longer than max_length: cut
    # its answer starts after max_length: cut, nothing left to learn, left out
    e = (list(range(40, 52)), [IGNORE] * 9 + [49, 50, 51], 1.0)
    # one label after the first token is enough to keep it
    f = ([60, 61], [IGNORE, 61], 1.0)
    p = pack([a, b, c, d, e, f], max_length=8, pad_id=0)
    assert p.seq_lens == [[4, 3], [6], [8], [2]] and (p.truncated, p.unlabeled) == (2, 1)
    assert p.labels[3].tolist() == [IGNORE, 61] + [IGNORE] * 6
    assert p.input_ids[0].tolist() == [1, 2, 3, 4, 5, 6, 7, 0]
    assert p.position_ids[0].tolist() == [0, 1, 2, 3, 0, 1, 2, 0]
    # the first label of every conversation is ignored: no prediction across a boundary
    assert p.labels[0].tolist() == [IGNORE, IGNORE, 3, 4, IGNORE, 6, 7, IGNORE]
    assert p.labels[2].tolist()[0] == IGNORE and p.labels[2].tolist()[1:] == list(range(21, 28))
    assert p.token_weights[0].tolist() == [2, 2, 2, 2, 0.5, 0.5, 0.5, 0]
    # position ids never continue from one conversation into the next
    for row, lens in zip(p.position_ids, p.seq_lens):
        at = 0
        for n in lens:
            assert row[at:at + n].tolist() == list(range(n))
            at += n


def test_pinned_read_and_cache(tmp_path, tok):
    table = tmp_path / "lake" / "gold" / "sft"
    schema = pa.schema([("sft_id", pa.string()), ("split", pa.string()),
                        ("weight", pa.float64()),
                        ("messages", pa.list_(pa.struct([
                            ("role", pa.string()), ("content", pa.string()),
                            ("tool_calls", pa.list_(pa.struct([
                                ("id", pa.string()), ("type", pa.string()),
                                ("function", pa.struct([("name", pa.string()),
                                                        ("arguments", pa.string())]))])))])))])
    v0 = [{"sft_id": f"s{i}", "split": "train", "weight": 1.0 + i,
           "messages": conv(f"q{i}", f"answer {i}")} for i in range(3)]
    write_deltalake(str(table), pa.Table.from_pylist(v0, schema))
    write_deltalake(str(table), pa.Table.from_pylist(
        [{**v0[0], "sft_id": "later"}], schema), mode="append")
    rows, version = read_sft(str(tmp_path / "lake"), version=0)
    assert version == 0 and [r["sft_id"] for r in rows] == ["s0", "s1", "s2"]
    packed, v, path = prepare(str(tmp_path / "lake"), "gold.sft", 0, tok, "tiny", 64,
                              tmp_path / "cache")
    assert v == 0 and path.exists()
    assert sum(len(x) for x in packed.seq_lens) == 3
    # another rank reads the same file instead of tokenizing
    other, _, same = prepare(str(tmp_path / "lake"), "gold.sft", 0, None, "tiny", 64,
                             tmp_path / "cache", rank=1, wait_s=1)
    assert same == path and np.array_equal(other.input_ids, packed.input_ids)
    assert sorted(set(np.unique(packed.token_weights)) - {0.0}) == [1.0, 2.0, 3.0]
