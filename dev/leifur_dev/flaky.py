"""A TCP proxy in front of the API server that fails on demand: for the chaos suite.

It passes bytes through untouched (TLS stays end to end, the serving certificate covers the
addresses it listens on). With faults switched on, a share of new connections is reset at once,
another share stalls before it is passed on (a request that times out), and switching faults on
cuts every open connection (watches break mid-stream). Seeded, so a run can be replayed.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time


class FlakyProxy:
    def __init__(self, upstream: tuple[str, int], listen: str = "0.0.0.0", seed: int = 0) -> None:
        self.upstream = upstream
        self.rng = random.Random(seed)
        self.reset_share = 0.0
        self.stall_share = 0.0
        self.stall_seconds = 0.0
        self.connections = 0
        self.resets = 0
        self.stalls = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._stop = threading.Event()
        self._listener = socket.create_server((listen, 0), reuse_port=False)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name="flaky-proxy", daemon=True)

    def start(self) -> FlakyProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()
        self.cut_all()

    def faults(self, reset_share: float, stall_share: float, stall_seconds: float = 3.0) -> None:
        """Switch faults on (cutting what is open) or off (all zero)."""
        with self._lock:
            self.reset_share, self.stall_share, self.stall_seconds = reset_share, stall_share, stall_seconds
        if reset_share or stall_share:
            self.cut_all()

    def cut_all(self) -> None:
        with self._lock:
            socks = list(self._open)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                roll = self.rng.random()
                reset = roll < self.reset_share
                stall = self.stall_seconds if not reset and roll < self.reset_share + self.stall_share else 0.0
                self.resets += reset
                self.stalls += bool(stall)
            if reset:
                # SO_LINGER 0: the client sees a reset, not an orderly close.
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                client.close()
                continue
            threading.Thread(target=self._serve, args=(client, stall), daemon=True).start()

    def _serve(self, client: socket.socket, stall: float) -> None:
        if stall:
            time.sleep(stall)
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._open.update((client, upstream))
        t = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
        t.start()
        self._pump(client, upstream)
        t.join()
        with self._lock:
            self._open.difference_update((client, upstream))
        client.close()
        upstream.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
