"""Placeholders and re-identification, including placeholders split across stream chunks."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from secure_ds.dlp._redact import Redactor, Reidentifier, StreamReidentifier, label_for


@dataclass(frozen=True)
class F:
    kind: str
    start: int
    end: int


def _find(text: str, kind: str, value: str) -> F:
    start = text.index(value)
    return F(kind, start, start + len(value))


def test_same_value_same_placeholder_and_counts() -> None:
    text = "mail ann@example.com and bob@example.org, again ann@example.com"
    starts = [text.index("ann@"), text.index("bob@"), text.rindex("ann@")]
    findings = [F("email", s, s + 15) for s in starts]
    findings[1] = F("email", starts[1], starts[1] + 15)
    redactor = Redactor([text])
    out = redactor.redact(text, findings, None)
    assert out == "mail <EMAIL_1> and <EMAIL_2>, again <EMAIL_1>"
    assert redactor.mapping == {"<EMAIL_1>": "ann@example.com", "<EMAIL_2>": "bob@example.org"}
    assert redactor.counts == {"email": 3}


def test_only_the_selected_kinds_are_replaced() -> None:
    text = "card 4111111111111111 mail a@example.com"
    findings = [
        _find(text, "credit_card", "4111111111111111"),
        _find(text, "email", "a@example.com"),
    ]
    out = Redactor([text]).redact(text, findings, frozenset({"credit_card"}))
    assert out == "card <CREDIT_CARD_1> mail a@example.com"


def test_placeholders_already_in_the_text_are_not_reused() -> None:
    text = "literal <EMAIL_1> and <EMAIL_7> then x@example.com"
    redactor = Redactor([text])
    out = redactor.redact(text, [_find(text, "email", "x@example.com")], None)
    assert out.endswith("then <EMAIL_8>")
    # re-identification touches only what this call introduced
    assert Reidentifier(redactor.mapping).apply(out) == text


@pytest.mark.parametrize(
    ("kind", "label"), [("email", "EMAIL"), ("employee-id", "EMPLOYEE_ID"), ("9x", "K_9X")]
)
def test_labels(kind: str, label: str) -> None:
    assert label_for(kind) == label


MAPPING = {
    "<EMAIL_1>": "ann@example.com",
    "<EMAIL_10>": "zed@example.com",
    "<PHONE_1>": "+15555550100",
}


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 100])
def test_stream_reidentification_at_any_split(size: int) -> None:
    original = "Write to <EMAIL_1> or <EMAIL_10>, call <PHONE_1>. Keep <NOT_1> and a < b > c <"
    expected = (
        "Write to ann@example.com or zed@example.com, call +15555550100. "
        "Keep <NOT_1> and a < b > c <"
    )
    stream = StreamReidentifier(Reidentifier(MAPPING))
    pieces = [original[i : i + size] for i in range(0, len(original), size)]
    out = "".join(stream.feed(p) for p in pieces) + stream.flush()
    assert out == expected


def test_stream_holds_back_only_a_possible_placeholder() -> None:
    stream = StreamReidentifier(Reidentifier(MAPPING))
    assert stream.feed("hello <EMA") == "hello "
    assert stream.feed("IL_1> bye") == "ann@example.com bye"
    assert stream.feed("x <b>") == "x <b>"  # cannot be a placeholder: nothing held
    assert stream.feed("<EMAIL_1") == ""
    assert stream.flush() == "<EMAIL_1"  # the stream ended mid-placeholder: passed through


def _sse(*events: dict[str, object]) -> bytes:
    import json

    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)


def test_sse_reidentification_across_events_and_byte_splits() -> None:
    import json

    from secure_ds.dlp._responses import SSEReidentifier

    deltas = ["Hi <EM", "AIL_1>, your number <PHO", "NE_1", "> is on file", ""]
    events = [
        {"choices": [{"index": 0, "delta": {"content": d}, "finish_reason": None}]}
        for d in deltas[:-1]
    ]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    raw = b": keep-alive\n\n" + _sse(*events) + b"data: [DONE]\n\n"
    for size in (1, 7, 50, len(raw)):
        rewriter = SSEReidentifier(Reidentifier(MAPPING))
        out = b"".join(rewriter.feed(raw[i : i + size]) for i in range(0, len(raw), size))
        out += rewriter.flush()
        text = ""
        for line in out.split(b"\n"):
            if line.startswith(b"data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    text += choice["delta"].get("content", "")
        assert text == "Hi ann@example.com, your number +15555550100 is on file"
        assert out.startswith(b": keep-alive\n\n")
        assert out.endswith(b"data: [DONE]\n\n")


def test_reidentify_body_touches_generated_text_only() -> None:
    import json

    from secure_ds.dlp._responses import reidentify_body

    body = json.dumps(
        {
            "id": "<EMAIL_1>",
            "choices": [
                {"message": {"role": "assistant", "content": "Mail <EMAIL_1>"}},
                {"text": "call <PHONE_1>"},
            ],
        }
    ).encode()
    out = json.loads(reidentify_body(body, Reidentifier(MAPPING)))
    assert out["id"] == "<EMAIL_1>"
    assert out["choices"][0]["message"]["content"] == "Mail ann@example.com"
    assert out["choices"][1]["text"] == "call +15555550100"
    assert reidentify_body(b"not json", Reidentifier(MAPPING)) == b"not json"
