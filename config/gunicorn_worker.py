"""The web process's worker class on SQLite: ``gthread``, whole webhooks answered in its loop.

``gthread`` hands every request from its loop thread to a pool thread and back: two
hand-offs, a future and a pipe a request, and the threads take the GIL from each other. On
SQLite that cost is all loss: a process answers one delivery at a time anyway
(``receiver/web/turns.py``), and the database is a local file, so there is no network wait for
other threads to fill. Webhooks are small and arrive in one piece, so when a kept-alive
connection turns readable and its socket already holds a whole ``POST /webhooks/…``
(headers and the body its ``Content-Length`` announces), reading it cannot wait on the
client: the loop thread answers it itself, as a ``sync`` worker would.

Everything else goes to the pool as in ``gthread``: another route, a body still on its way,
a chunked body or ``Expect: 100-continue``, TLS, a new connection. A client that trickles
its body therefore holds one pool thread, never the loop, and the slow-client protection
``gthread`` was chosen for stays (``tests/process/test_slow_clients.py``).

On PostgreSQL the Procfile keeps plain ``gthread`` (``config/gunicorn.py``): a webhook waits
on several round trips to the database server, and the pool's threads overlap those waits.
"""

from __future__ import annotations

import socket
from concurrent import futures
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

__all__ = ["PEEK_BYTES", "InlineWebhookWorker", "holds_whole_webhook"]

#: How much of the socket one look reads; a larger delivery goes to the pool.
PEEK_BYTES = 16384
_PREFIX = b"POST /webhooks/"
_HEAD_END = b"\r\n\r\n"
#: Headers that mean the body is not simply the next Content-Length bytes.
_NOT_WHOLE = (b"transfer-encoding", b"expect")


def holds_whole_webhook(data: bytes) -> bool:
    """Whether ``data`` starts with one whole ``POST /webhooks/…`` request, body included.

    Only a plain ``Content-Length`` body counts. Anything unusual (no or two lengths, a
    chunked body, ``Expect``, a header line without a colon) answers False, and gunicorn's
    own parser, in a pool thread, decides what it is.
    """
    if not data.startswith(_PREFIX):
        return False
    end = data.find(_HEAD_END)
    if end < 0:
        return False
    length = None
    for line in data[:end].split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            return False
        name = name.strip().lower()
        if name in _NOT_WHOLE:
            return False
        if name == b"content-length":
            value = value.strip()
            if length is not None or not value.isdigit():
                return False
            length = int(value)
    return length is not None and len(data) - end - len(_HEAD_END) >= length


class InlineWebhookWorker(ThreadWorker):  # type: ignore[misc]
    """``gthread``, but a kept-alive connection holding a whole webhook is answered in the loop."""

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        if not self.cfg.is_ssl and holds_whole_webhook(_peek(client)):
            self.poller.unregister(client)
            self.keepalived_conns.remove(conn)
            # gunicorn's own request handling and its bookkeeping after a request, as a pool
            # thread would run them; the socket holds every byte, so no read waits.
            answered: futures.Future[Any] = futures.Future()
            answered.set_result(self.handle(conn))
            self.finish_request(conn, answered)
            return
        super().on_client_socket_readable(conn, client)


def _peek(client: socket.socket) -> bytes:
    try:
        return client.recv(PEEK_BYTES, socket.MSG_PEEK)
    except OSError:  # reset meanwhile: the pool thread meets it and closes the connection
        return b""
