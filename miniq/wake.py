"""Wake-up hints: a producer pokes idle workers of the same database file.

A hint is one datagram to each worker's Unix socket, ``<db digest>-<pid>.sock``
in one folder per user. It is only a hint: workers also poll ``PRAGMA
data_version``, so a lost or refused datagram delays a task by one poll.

Security: the folder must be a real directory (checked with lstat), owned by
this user, mode 0700, so only this user and root can reach the sockets. If it
is not, miniq leaves it untouched and hints are off: workers warn and poll.
"""
import contextlib
import hashlib
import logging
import os
import re
import socket
import stat
import tempfile
import weakref
from typing import Optional

log = logging.getLogger("miniq.worker")
SOCKET_NAME = re.compile(r"[0-9a-f]{16}-([1-9][0-9]{0,8})\.sock")
TERMINATE = b"t"  # a hint that a running task was revoked with terminate: a busy worker acts


def pid_alive(pid: int) -> bool:
    """True if a process of that pid exists (ours or another user's); never for 0 or
    less, which name process groups to os.kill."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's
        pass
    return True


def machine_id() -> str:
    """Where a pid means something: this host, this boot, this pid namespace (a
    container sharing the file and the hostname has another)."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        with open("/proc/sys/kernel/random/boot_id") as boot:
            parts.append(boot.read().strip())
        parts.append(os.readlink("/proc/self/ns/pid"))
    return " ".join(parts)


def is_private(st: os.stat_result) -> bool:
    """True for a real folder of this user that group and others cannot enter."""
    return (stat.S_ISDIR(st.st_mode)
            and st.st_uid == os.getuid()
            and not st.st_mode & 0o077)


def unlink_socket(path: str) -> None:
    """Remove path only if it is a socket: never a file, folder or symlink."""
    with contextlib.suppress(FileNotFoundError):  # another worker swept it first
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)


class Waker:
    def __init__(self, db_path: str):
        real = os.path.realpath(db_path).encode()
        self.digest = hashlib.sha1(real).hexdigest()[:16]
        self.folder = os.path.join(tempfile.gettempdir(), f"miniq-{os.getuid()}")
        self._stamp = None  # the folder's mtime when _targets were listed
        self._targets = []
        self._sender = None  # this process's socket: made again after a fork
        self._pid = 0

    def notify(self, hint: bytes = b"!") -> None:
        """Poke every listening worker of this database; never blocks, never raises."""
        try:
            st = os.lstat(self.folder)
            if not is_private(st):
                return
            if st.st_mtime_ns != self._stamp:
                self._targets = self._peers()
                self._stamp = st.st_mtime_ns
            if self._pid != os.getpid():  # first, or a fork's parent's: its own
                self.close()
                self._sender, self._pid = _datagrams(), os.getpid()
                weakref.finalize(self, self._sender.close)  # no open socket left to collect
        except OSError:
            return
        for target in self._targets:
            with contextlib.suppress(OSError):  # a worker gone, or its hints queue full
                self._sender.sendto(hint, target)

    def close(self) -> None:
        """Close the socket hints are sent from; the next notify() opens one again."""
        if self._sender is not None:
            self._sender.close()
        self._sender, self._pid = None, 0

    def _peers(self):
        """Socket paths of this database's workers (other databases share the folder)."""
        return [os.path.join(self.folder, name)
                for name in os.listdir(self.folder)
                if name.startswith(f"{self.digest}-")]

    def listen(self) -> Optional[socket.socket]:
        """A non-blocking socket for this process to receive hints on, or None."""
        try:
            self._make_folder()
            self._sweep()
            return self._bind()
        except OSError as exc:
            log.warning("wake hints off, polling only: %s", exc)
            return None

    def _make_folder(self):
        """Create this user's folder if missing; raise unless it is private."""
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.folder, 0o700)
        if not is_private(os.lstat(self.folder)):
            raise PermissionError(
                f"{self.folder} is a symlink, another user's, or open to others")

    def _sweep(self):
        """Remove sockets of workers that died, of any database of this user."""
        for name in os.listdir(self.folder):
            match = SOCKET_NAME.fullmatch(name)
            if match and not pid_alive(int(match[1])):
                unlink_socket(os.path.join(self.folder, name))

    def _bind(self):
        path = os.path.join(self.folder, f"{self.digest}-{os.getpid()}.sock")
        unlink_socket(path)  # left by an earlier process with our pid
        sock = _datagrams()
        try:
            sock.bind(path)
        except OSError:
            sock.close()
            raise
        return sock

    def unlisten(self, sock: Optional[socket.socket]) -> None:
        """Remove this process's socket; the folder stays, shared by the user's workers."""
        if sock is not None:
            with contextlib.suppress(OSError):
                os.unlink(sock.getsockname())
            sock.close()


def _datagrams():
    """A non-blocking Unix datagram socket: hints never hold up the sender or the worker."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    return sock


def drain(sock: socket.socket) -> set:
    """Read every pending hint: many pokes mean the same as one; the kinds that came."""
    kinds, data = set(), True
    with contextlib.suppress(OSError):
        while data:
            data = sock.recv(64)
            kinds.add(data)
    return kinds
