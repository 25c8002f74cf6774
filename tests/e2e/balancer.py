"""A tiny TCP load balancer on loopback: each new connection goes to the backend the test
currently selects (``route_to``), or to the next backend in turn (``round_robin``, no
stickiness at all). TLS passes through untouched, as behind a layer-4 balancer."""
from __future__ import annotations

import socket
import threading


class Balancer:
    def __init__(self, listen_port: int, backends: list[int], host: str = "127.0.0.1") -> None:
        self.host, self.backends = host, backends
        self.active: int | None = 0
        self.connections = [0] * len(backends)
        self._accepted = 0
        self._server = socket.create_server((host, listen_port))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def route_to(self, index: int) -> None:
        self.active = index

    def round_robin(self) -> None:
        """Every new connection to the next backend, whoever opens it."""
        self.active = None

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                continue
            index = self.active if self.active is not None else self._accepted % len(self.backends)
            self._accepted += 1
            self.connections[index] += 1
            try:
                upstream = socket.create_connection((self.host, self.backends[index]), timeout=10)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._server.close()
