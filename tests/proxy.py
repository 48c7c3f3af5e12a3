"""A loopback TCP proxy in threads, put between the code and a real server (PostgreSQL, Redis) to break the path.

- `cut()`: the server is down. Every connection is dropped and new ones are closed at once (a refusal).
- `stall()`: the server hangs. Connections stay open and new ones are accepted, but not a byte goes either
  way: the case that costs hours when nothing bounds the wait (a frozen server, a half-dead network path).
- `restore()`: the path works again.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time


class TcpProxy:
    """A loopback TCP proxy to 127.0.0.1:target_port that can refuse (`cut`) or hang (`stall`) on demand."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._stalled = threading.Event()
        self._stop = threading.Event()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._held: list[socket.socket] = []  # connections accepted while stalled, never forwarded
        self._lock = threading.Lock()
        self.refused = 0
        self.stalled_connections = 0
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._open.is_set():
                # As a server that is down: the connection is closed at once.
                self.refused += 1
                client.close()
                continue
            if self._stalled.is_set():
                # As a hung server: the handshake succeeds, then nothing ever comes back.
                with self._lock:
                    self.stalled_connections += 1
                    self._held.append(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                if self._stalled.is_set():
                    # Read nothing, forward nothing: the peers' requests sit unanswered.
                    time.sleep(0.05)
                    continue
                readable, _, _ = select.select([a, b], [], [], 0.2)
                for src in readable:
                    data = src.recv(65536)
                    if not data:
                        raise ConnectionError
                    (b if src is a else a).sendall(data)
        except (OSError, ConnectionError, ValueError):
            pass
        finally:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()

    def cut(self) -> None:
        """Close every connection through the proxy and refuse new ones (the server is unreachable)."""
        self._open.clear()
        self._stalled.clear()
        with self._lock:
            pairs, self._pairs = self._pairs, []
            held, self._held = self._held, []
        for sock in [s for pair in pairs for s in pair] + held:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def stall(self) -> None:
        """Keep every connection open and accept new ones, but forward nothing (the server hangs)."""
        self._stalled.set()

    def restore(self) -> None:
        """Let traffic through again; connections accepted while stalled are closed (their clients gave up)."""
        self._stalled.clear()
        with self._lock:
            held, self._held = self._held, []
        for sock in held:
            with contextlib.suppress(OSError):
                sock.close()
        self._open.set()

    def close(self) -> None:
        """Stop the proxy."""
        self._stop.set()
        self.cut()
        self.listener.close()
