"""Which bytes on a kept-alive socket the SQLite worker may answer in its loop thread."""

from __future__ import annotations

import pytest

from config.gunicorn_worker import holds_whole_webhook

HEAD = b"POST /webhooks/ittybit/tok.en HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@pytest.mark.parametrize(
    "data",
    [
        HEAD + b"Content-Length: 2\r\n\r\n{}",
        HEAD + b"content-length:2\r\n\r\n{}",
        HEAD + b"Content-Length: 0\r\n\r\n",
        # The next request pipelined behind it: the first is still whole.
        HEAD + b"Content-Length: 2\r\n\r\n{}" + HEAD,
        b"POST /webhooks/ittybit HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
    ],
)
def test_a_whole_webhook_is_answered_in_the_loop(data: bytes) -> None:
    assert holds_whole_webhook(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        # The body is still on its way: reading it could wait on the client.
        HEAD + b"Content-Length: 3\r\n\r\n{}",
        HEAD + b"Content-Length: 60000\r\n\r\n{",
        # The headers are still on their way.
        HEAD + b"Content-Length: 2\r\n",
        # Bodies whose end is not a Content-Length away, or that wait for the server first.
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        HEAD + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
        HEAD + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
        # No length, two lengths, a length that is not a number, a line without a colon.
        HEAD + b"\r\n",
        HEAD + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
        HEAD + b"Content-Length: -2\r\n\r\n{}",
        HEAD + b"Content-Length: 2 \x00\r\n\r\n{}",
        HEAD + b"Broken header\r\nContent-Length: 2\r\n\r\n{}",
        # Not a webhook: other routes keep gunicorn's threads.
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"POST /api/v1/submissions HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
        b"POST /webhooksx HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
    ],
)
def test_anything_else_goes_to_the_pool(data: bytes) -> None:
    assert not holds_whole_webhook(data)
