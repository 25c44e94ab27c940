"""Wake-up hints: a producer pokes idle workers of the same database file.

A hint is one datagram to each worker's Unix socket in a folder named after
the database. It is only a hint: workers also poll ``PRAGMA data_version``,
so a lost or refused datagram delays a task by one poll, never loses it.
"""
import contextlib
import hashlib
import os
import socket
import tempfile
from typing import List, Optional


def pid_alive(pid: int) -> bool:
    """True if a process of that pid exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Waker:
    def __init__(self, db_path: str):
        digest = hashlib.sha1(os.path.realpath(db_path).encode()).hexdigest()[:16]
        self.folder = os.path.join(tempfile.gettempdir(), f"miniq-{digest}")
        self._stamp: Optional[int] = None
        self._targets: List[str] = []
        self._sender: Optional[socket.socket] = None
        self._pid = 0

    def notify(self) -> None:
        """Poke every listening worker; never blocks, never raises."""
        try:
            stamp = os.stat(self.folder).st_mtime_ns
            if stamp != self._stamp:
                self._targets = [os.path.join(self.folder, f) for f in os.listdir(self.folder)]
                self._stamp = stamp
            if self._pid != os.getpid():
                self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sender.setblocking(False)
                self._pid = os.getpid()
        except OSError:
            return
        for target in self._targets:
            try:
                self._sender.sendto(b"!", target)
            except OSError:  # a worker gone, or its queue of hints already full
                pass

    def listen(self) -> Optional[socket.socket]:
        """A non-blocking socket for this process to receive hints on, or None."""
        try:
            os.makedirs(self.folder, mode=0o700, exist_ok=True)
            for name in os.listdir(self.folder):  # sockets of workers that died
                pid = name.split(".")[0]
                if pid.isdigit() and not pid_alive(int(pid)):
                    os.unlink(os.path.join(self.folder, name))
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            path = os.path.join(self.folder, f"{os.getpid()}.sock")
            if os.path.exists(path):
                os.unlink(path)
            sock.bind(path)
            sock.setblocking(False)
            return sock
        except OSError:
            return None

    def unlisten(self, sock: Optional[socket.socket]) -> None:
        if sock is not None:
            with contextlib.suppress(OSError):
                os.unlink(sock.getsockname())
                os.rmdir(self.folder)  # only succeeds for the last worker of this file
            sock.close()


def drain(sock: socket.socket) -> None:
    """Read every pending hint: many pokes mean the same as one."""
    with contextlib.suppress(OSError):
        while sock.recv(64):
            pass
