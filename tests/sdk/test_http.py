"""What the SDK's fetch sends and how it reads the reply, before and after the channel."""

from __future__ import annotations

import json

import pytest

from corral.sdk.http import MAX_REQUEST_BODY, Headers, Response, request


def test_json_and_form_bodies_are_encoded_with_their_content_type() -> None:
    sent = request("https://a.example/x", "post", {"X-Key": "k"}, {"n": 1, "é": [1]}, None, 5)
    assert sent == {
        "url": "https://a.example/x",
        "method": "POST",
        "headers": [["X-Key", "k"], ["content-type", "application/json"]],
        "body": '{"n":1,"é":[1]}'.encode(),
        "timeout_s": 5,
    }
    form = request("https://a.example/x", "POST", None, None, {"a": "1 2", "b": "&"}, None)
    assert form["body"] == b"a=1+2&b=%26"
    assert form["headers"] == [["content-type", "application/x-www-form-urlencoded"]]
    own = request("https://a.example/x", "PUT", [("Content-Type", "text/csv")], None, "a,b", None)
    assert own["headers"] == [["Content-Type", "text/csv"]]  # the author's own type stays
    assert own["body"] == b"a,b"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"json": {}, "data": "x"}, ValueError, "pass json= or data=, not both"),
        ({"timeout_s": 0}, ValueError, "timeout_s must be a positive number of seconds"),
        ({"timeout_s": True}, ValueError, "timeout_s must be a positive number of seconds"),
        ({"headers": {"a": 1}}, TypeError, "header names and values must be str"),
        ({"headers": ["ab"]}, TypeError, "headers must be a dict or a list of (name, value)"),
        ({"data": b"x" * (MAX_REQUEST_BODY + 1)}, ValueError, "a fetch may send at most"),
        ({"json": {"when": object()}}, TypeError, "is not JSON serializable"),
    ],
)
def test_mistakes_raise_at_the_call(kwargs: dict[str, object], error: type, message: str) -> None:
    args: dict[str, object] = {"headers": None, "json": None, "data": None, "timeout_s": None}
    with pytest.raises(error) as raised:
        request("https://a.example/", "GET", **(args | kwargs))  # type: ignore[arg-type]
    assert message in str(raised.value)


def test_headers_ignore_case_and_join_repeats() -> None:
    headers = Headers([("Set-Cookie", "a=1"), ("Content-Type", "text/plain"), ("set-cookie", "b")])
    assert headers["content-type"] == headers["CONTENT-TYPE"] == "text/plain"
    assert headers["Set-Cookie"] == "a=1, b"
    assert headers.get_list("SET-COOKIE") == ["a=1", "b"]
    assert sorted(headers) == ["content-type", "set-cookie"]


def test_a_response_decodes_text_by_its_charset_and_parses_json() -> None:
    reply = {
        "status": 200,
        "headers": [["content-type", 'text/plain; charset="latin-1"']],
        "content": "café".encode("latin-1"),
        "url": "https://a.example/",
    }
    assert Response.from_reply(reply).text == "café"
    unknown = reply | {"headers": [["content-type", "text/plain; charset=klingon"]]}
    assert Response.from_reply(unknown | {"content": "ü".encode()}).text == "ü"
    data = Response.from_reply(reply | {"content": b'{"a": [1]}', "headers": []})
    assert data.json() == {"a": [1]}
    assert data.text == '{"a": [1]}'
    with pytest.raises(json.JSONDecodeError):  # a ValueError
        Response.from_reply(reply | {"content": b"<html>"}).json()
