"""A loopback TCP proxy in front of the live test server, to play a flaky network deterministically.

- ``stop()`` / ``start()``: the server goes away (connections refused, open ones cut) and comes
  back on the same port.
- ``hold()``: new connections are accepted but not forwarded until ``release()``; ``held`` is set
  once one is waiting — the client is then provably blocked in the middle of a report.
- ``swallow_answers = True``: requests reach the server, its answers never reach the client (the
  connection is cut once the server starts answering) — the server wrote, the client saw a failure.
"""

import contextlib
import socket
import threading

_GIVE_UP_SECONDS = 30  # a held connection is released by then at the latest (a failing test must not hang)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LoopbackProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.swallow_answers = False
        self.held = threading.Event()
        self._release = threading.Event()
        self._release.set()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(32)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)

    def hold(self) -> None:
        self.held.clear()
        self._release.clear()

    def release(self) -> None:
        self._release.set()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            self._track(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        if not self._release.is_set():
            self.held.set()
            self._release.wait(_GIVE_UP_SECONDS)
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            _close(client)
            return
        self._track(upstream)
        threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
        self._pump(upstream, client, self.swallow_answers)

    def _pump(self, source: socket.socket, target: socket.socket, swallow: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data or swallow:
                    break
                target.sendall(data)
        except OSError:
            pass
        _close(source)
        _close(target)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
