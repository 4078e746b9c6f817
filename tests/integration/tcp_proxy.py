"""A loopback TCP proxy that a test can cut and restore, to make a broker unreachable.

Every accepted connection is paired with one to the upstream address and bytes are
pumped both ways by two threads. ``cut`` closes the listening socket and every open
connection, so clients see their connections drop and new ones refused (the port is
closed, as when a host goes away); ``restore`` listens on the same port again.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Self

_CHUNK = 65_536


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``upstream``; ``cut`` and ``restore`` from any thread."""

    def __init__(self, upstream: tuple[str, int] | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.upstream = upstream
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._closed = False
        self.accepted = 0
        self.port = self._listen(0)

    @property
    def address(self) -> str:
        """``host:port`` for ``bootstrap.servers``."""
        return f"{self.host}:{self.port}"

    @property
    def open_connections(self) -> int:
        """Client and upstream sockets currently open through the proxy."""
        with self._lock:
            return len(self._sockets)

    def _listen(self, port: int) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, port))
        listener.listen(64)
        with self._lock:
            self._listener = listener
        thread = threading.Thread(
            target=self._accept, args=(listener,), name="proxy-accept", daemon=True
        )
        thread.start()
        self._threads.append(thread)
        return int(listener.getsockname()[1])

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed by cut() or close()
            upstream = self._connect()
            if upstream is None:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut while this one was connecting
                    client.close()
                    upstream.close()
                    return
                self._sockets.update((client, upstream))
                self.accepted += 1
            for source, sink in ((client, upstream), (upstream, client)):
                thread = threading.Thread(
                    target=self._pump, args=(source, sink), name="proxy-pump", daemon=True
                )
                thread.start()

    def _connect(self) -> socket.socket | None:
        if self.upstream is None:
            return None
        try:
            return socket.create_connection(self.upstream, timeout=5.0)
        except OSError:
            return None

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            source.settimeout(None)
            while data := source.recv(_CHUNK):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(source)
            self._drop(sink)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def cut(self) -> None:
        """Drop every connection and stop listening: the port now refuses connections."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets = list(self._sockets)
        if listener is not None:
            listener.close()
        for sock in sockets:
            self._drop(sock)

    def restore(self) -> None:
        """Listen on the same port again."""
        if self._closed:
            raise RuntimeError("the proxy is closed")
        with self._lock:
            listening = self._listener is not None
        if not listening:
            self._listen(self.port)

    def close(self) -> None:
        """Cut for good and wait for the threads."""
        self._closed = True
        self.cut()
        for thread in self._threads:
            thread.join(5.0)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
