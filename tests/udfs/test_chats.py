"""udfs.chats without Spark: both shapes to the same messages, tool calls, the reasons."""

from __future__ import annotations

import io
import json

import pytest

from udfs.chats import (
    ChatError,
    array_items,
    chat_id,
    chat_language,
    normalize,
    problem,
    records_of,
    redact_messages,
)

OPENAI = {"messages": [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": [{"type": "text", "text": "Reverse "}, {"type": "text",
                                                                        "text": "a list?"}]},
    {"role": "assistant", "content": "```python\nxs[::-1]\n```"},
]}
SHAREGPT = {"system": "Be brief.", "conversations": [
    {"from": "human", "value": "Reverse a list?"},
    {"from": "gpt", "value": "```python\nxs[::-1]\n```"},
]}
EXPECTED = [{"role": "system", "content": "Be brief.", "tool_calls": None},
            {"role": "user", "content": "Reverse a list?", "tool_calls": None},
            {"role": "assistant", "content": "```python\nxs[::-1]\n```", "tool_calls": None}]


def test_both_shapes_give_the_same_messages():
    a, shape_a = normalize(json.dumps(OPENAI))
    b, shape_b = normalize(json.dumps(SHAREGPT))
    assert (a, shape_a) == (EXPECTED, "messages")
    assert (b, shape_b) == (EXPECTED, "sharegpt")
    assert chat_id(a) == chat_id(b)
    assert chat_language(a) == "python"


def test_tool_calls_in_both_shapes():
    openai = {"messages": [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "weather", "arguments": {"city": "Oslo"}}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "-3 C"},
        {"role": "assistant", "content": "It is -3 C."}]}
    sharegpt = {"conversations": [
        {"from": "human", "value": "Weather in Oslo?"},
        {"from": "function_call", "value": json.dumps({"name": "weather",
                                                       "arguments": {"city": "Oslo"}})},
        {"from": "observation", "value": "-3 C"},
        {"from": "gpt", "value": "It is -3 C."}]}
    a, _ = normalize(json.dumps(openai))
    b, _ = normalize(json.dumps(sharegpt))
    call = a[1]["tool_calls"][0]
    assert call == {"id": "c1", "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}
    assert [m["role"] for m in a] == [m["role"] for m in b] == [
        "user", "assistant", "tool", "assistant"]
    assert b[1]["tool_calls"][0]["function"] == call["function"]


@pytest.mark.parametrize("record, error", [
    ("{not json", "invalid_json"),
    ("[1, 2]", "not_an_object: list"),
    ('{"text": "hi"}', "unknown_shape"),
    ('{"messages": [{"role": "wizard", "content": "x"}]}', "unknown_role: wizard"),
    ('{"messages": [{"content": "x"}]}', "invalid_message: messages[0] has no role"),
    ('{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
     "invalid_message: messages[0] has a non-text content part (image_url)"),
    ('{"messages": [{"role": "assistant", "content": "", "tool_calls": [{"id": "1", "type": '
     '"function", "function": {"name": "f", "arguments": "{oops"}}]}]}',
     "invalid_tool_call: messages[0].tool_calls[0].arguments is not JSON"),
    ('{"conversations": [{"from": "narrator", "value": "x"}]}', "unknown_role: narrator"),
])
def test_records_that_are_not_conversations(record, error):
    with pytest.raises(ChatError) as err:
        normalize(record)
    assert str(err.value).startswith(error)


def test_fixed_format_refuses_the_other_shape():
    with pytest.raises(ChatError, match="unknown_shape"):
        normalize(json.dumps(SHAREGPT), "messages")


@pytest.mark.parametrize("turns, reason", [
    ([], "empty_conversation"),
    ([("user", " "), ("assistant", "")], "empty_conversation"),
    ([("user", "Hi"), ("user", "Hello?")], "one_sided"),
    ([("system", "s"), ("assistant", "Hi")], "one_sided"),
    ([("system", "s"), ("assistant", "Hi"), ("user", "Thanks")], "one_sided"),  # no question
    ([("user", "Hi"), ("assistant", ""), ("user", "?"), ("assistant", "Yes")], "empty_answer"),
    ([("user", "Hi"), ("assistant", "Hello"), ("user", "Still there?")], None),
])
def test_problem(turns, reason):
    messages = [{"role": r, "content": c, "tool_calls": None} for r, c in turns]
    cut, got = problem(messages)
    assert got == reason
    if reason is None:  # the unanswered last question is cut
        assert [m["content"] for m in cut] == ["Hi", "Hello"]


def test_records_of_locates_lines_and_items():
    jsonl = b'{"a": 1}\n\n{"b": 2}\r\n'
    assert list(records_of(jsonl, "f.jsonl")) == [("f.jsonl:1", '{"a": 1}', None),
                                                   ("f.jsonl:3", '{"b": 2}', None)]
    array = json.dumps([{"a": 1}, {"b": 2}], indent=2).encode()
    assert [w for w, _, _ in records_of(array, "f.json")] == ["f.json#item=0", "f.json#item=1"]
    single = json.dumps({"messages": []}, indent=2).encode()
    assert [w for w, _, _ in records_of(single, "g.json")] == ["g.json#item=0"]
    # one line that is not UTF-8 is an error of its own; the other lines are read
    got = list(records_of(b'{"a": 1}\n{"b": "caf\xe9"}\n{"c": 3}\n', "h.jsonl"))
    assert [(w, t) for w, t, _ in got] == [("h.jsonl:1", '{"a": 1}'), ("h.jsonl:2", None),
                                           ("h.jsonl:3", '{"c": 3}')]
    assert got[1][2].startswith("invalid_utf8: invalid continuation byte")


def test_an_array_item_with_a_lone_surrogate_is_named_not_fatal():
    """Re-encoded, "\\ud800" would be a character no UTF-8 text holds (the stage's batch could
    not be built); it stays escaped and normalize names it. Other non-ASCII stays as it is."""
    array = (b'[{"messages": [{"role": "user", "content": "caf\xc3\xa9 \\ud800"}, '
             b'{"role": "assistant", "content": "ok"}]}, {"messages": []}]')
    [(where, text, error), (_, other, _)] = records_of(array, "s.json")
    assert (where, error, other) == ("s.json#item=0", None, '{"messages": []}')
    assert "\\ud800" in text and "\\u00e9" in text  # the whole item escaped, as JSON allows
    text.encode("utf-8")
    with pytest.raises(ChatError, match="^invalid_text: turn 0: surrogates not allowed"):
        normalize(text)
    [(_, plain, _)] = records_of('[{"a": "café"}]'.encode(), "t.json")
    assert plain == '{"a": "café"}'


def test_redaction_of_contents_and_arguments():
    messages = [{"role": "user", "content": "mail carol.danvers@shield-ops.net", "tool_calls": None},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "1", "type": "function", "function": {
                        "name": "send", "arguments": '{"to": "carol.danvers@shield-ops.net"}'}}]}]
    out, counts = redact_messages(messages)
    assert out[0]["content"] == "mail <EMAIL>"
    assert out[1]["tool_calls"][0]["function"]["arguments"] == '{"to": "<EMAIL>"}'
    assert counts == {"EMAIL": 2}


def test_hostile_records_are_named_not_raised():
    deep = '{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(ChatError, match="invalid_json: nested too deeply"):
        normalize(deep)
    surrogate = '{"messages": [{"role": "user", "content": "a \\ud800 b"}, ' \
                '{"role": "assistant", "content": "ok"}]}'
    with pytest.raises(ChatError, match="invalid_text: turn 0"):
        normalize(surrogate)
    # a whole file that is one deep array is read line by line, not raised
    [(where, text, error)] = list(records_of(("[" * 100_000).encode(), "deep.json"))
    assert where == "deep.json:1" and error is None


def test_array_items_reads_an_array_in_small_reads_as_json_loads_does():
    doc = [{"messages": [{"role": "user", "content": "caf\u00e9 \U0001F600 \"q\""}]}, 0.25,
           -12e-7, 1234567, True, None, "\ud800", [1, [2, {}]], {}]
    for indent in (None, 2):
        data = json.dumps(doc, indent=indent).encode()
        for chunk in (1, 2, 3, 5, 8, 13, 64):  # every cut: inside strings, numbers, escapes
            assert list(array_items(io.BytesIO(data), chunk=chunk)) == doc, (indent, chunk)
    assert list(array_items(io.BytesIO(b"\xef\xbb\xbf [ ] "), chunk=2)) == []

    def until_error(data: bytes, **kw):
        got = []
        with pytest.raises(ValueError) as err:
            for item in array_items(io.BytesIO(data), chunk=3, **kw):
                got.append(item)
        return got, err.value

    got, err = until_error(b'[{"a": 1}, {"b": ')  # breaks off
    assert got == [{"a": 1}] and err.msg == "Expecting value"
    got, err = until_error(b"[1 2]")
    assert got == [1] and err.msg == "expected ',' or ']'"
    got, err = until_error(b'{"a": 1}')
    assert got == [] and err.msg == "not a JSON array"
    got, err = until_error(b'[1, {"b": "\xff"}]')
    assert got == [1] and isinstance(err, UnicodeDecodeError)
    got, err = until_error(b'[1, "' + b"x" * 100 + b'"]', max_item=50)
    assert got == [1] and str(err) == "an item of over 50 characters"
