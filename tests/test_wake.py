"""Wake-up hints: one private folder per user, refused (and left untouched)
when someone else planted it; a real worker runs tasks in every case."""
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile

import pytest

from miniq.wake import Waker
from tests import tasks
from tests.conftest import wait_for

OTHER_DB = "0" * 16  # the digests of some other databases of this user
THIRD_DB = "1" * 16
FOURTH_DB = "2" * 16


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """A short TMPDIR of this test's own, for this process and its workers.

    Short because a Unix socket path holds at most 104 bytes on macOS; it
    takes tmp_path first so that pytest's own temp root stays where it was."""
    path = tempfile.mkdtemp(prefix="mq-")
    monkeypatch.setenv("TMPDIR", path)
    monkeypatch.setattr(tempfile, "tempdir", path)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def worker_env(private_tmp):
    return {"TMPDIR": private_tmp}


def user_folder():
    return os.path.join(tempfile.gettempdir(), f"miniq-{os.getuid()}")


def dead_pid():
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(10)
    return proc.pid


def plant_socket(path, keep_open=False):
    """A socket file at path, as a worker that is gone (or an eavesdropper) leaves it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    if keep_open:
        return sock
    sock.close()


def received(sock):
    try:
        return sock.recv(64)
    except BlockingIOError:
        return b""


def write(path, text="keep me"):
    with open(path, "w") as f:
        f.write(text)


def read(path):
    with open(path) as f:
        return f.read()


def listing(folder):
    return sorted(os.listdir(folder))


def runs_a_task():
    assert tasks.add.delay(2, 3).get(timeout=20) == 5


def worker_socket(app, worker):
    return os.path.join(user_folder(), f"{app.waker.digest}-{worker.pid}.sock")


# 1. the usual case: a private folder, hints delivered -------------------------------

def test_a_worker_listens_in_a_private_folder_and_removes_its_socket_on_exit(
        private_tmp, worker_env, app, start_worker):
    worker = start_worker(env=worker_env)
    path = worker_socket(app, worker)
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    folder = os.lstat(user_folder())
    assert stat.S_IMODE(folder.st_mode) == 0o700 and folder.st_uid == os.getuid()
    runs_a_task()
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert not os.path.lexists(path)
    assert "hints off" not in worker.output()


def test_a_hint_reaches_only_the_workers_of_its_own_database(private_tmp, tmp_path):
    mine, other = Waker(str(tmp_path / "a.db")), Waker(str(tmp_path / "b.db"))
    mine_sock, other_sock = mine.listen(), other.listen()
    try:
        assert mine_sock is not None and other_sock is not None
        Waker(str(tmp_path / "a.db")).notify()
        assert wait_for(lambda: received(mine_sock), timeout=5, message="hint") == b"!"
        assert received(other_sock) == b""  # a local datagram is delivered at once
    finally:
        mine.unlisten(mine_sock)
        other.unlisten(other_sock)
    assert listing(user_folder()) == []


def test_a_producer_without_workers_creates_nothing(private_tmp, tmp_path):
    Waker(str(tmp_path / "a.db")).notify()
    assert listing(private_tmp) == []


# 2. a folder someone else planted: left untouched, no hints, tasks still run --------

def plant_open_folder(folder):
    os.mkdir(folder)
    os.chmod(folder, 0o777)


def plant_foreign_folder(folder):
    if os.getuid() != 0:
        pytest.skip("only root can give a folder to another uid")
    os.mkdir(folder, 0o700)
    os.chown(folder, 12345, 12345)


@pytest.mark.parametrize("plant", [plant_open_folder, plant_foreign_folder])
def test_a_folder_not_private_is_left_alone_and_hears_no_hints(
        private_tmp, worker_env, app, start_worker, plant):
    folder = user_folder()
    plant(folder)
    before = os.lstat(folder)
    # An eavesdropper's socket, named like a worker of this database.
    spy = plant_socket(os.path.join(folder, f"{app.waker.digest}-1.sock"), keep_open=True)
    try:
        worker = start_worker(env=worker_env)
        assert "wake hints off" in worker.output()
        runs_a_task()  # sending notifies: never to a folder that is not private
        assert received(spy) == b""
        assert listing(folder) == [f"{app.waker.digest}-1.sock"]
        after = os.lstat(folder)
        assert (after.st_mode, after.st_uid) == (before.st_mode, before.st_uid)
    finally:
        spy.close()


def test_a_symlink_where_the_folder_should_be_is_never_followed(
        private_tmp, worker_env, app, start_worker):
    # The target would pass every check if followed: only lstat sees the symlink.
    target = os.path.join(private_tmp, "victim")
    os.mkdir(target, 0o700)
    write(os.path.join(target, "precious.txt"))
    plant_socket(os.path.join(target, f"{app.waker.digest}-{dead_pid()}.sock"))
    before = listing(target)
    os.symlink(target, user_folder())
    worker = start_worker(env=worker_env)
    assert "wake hints off" in worker.output()
    runs_a_task()
    assert listing(target) == before
    assert os.path.islink(user_folder())


# 3. cleanup inside the private folder: dead workers' sockets, nothing else ----------

def test_listen_removes_only_the_sockets_of_dead_workers(
        private_tmp, worker_env, app, start_worker):
    folder, digest, dead = user_folder(), app.waker.digest, dead_pid()
    os.mkdir(folder, 0o700)
    outside = os.path.join(private_tmp, "outside.txt")
    write(outside)
    plant_socket(os.path.join(folder, f"{digest}-{dead}.sock"))
    plant_socket(os.path.join(folder, f"{OTHER_DB}-{dead}.sock"))
    kept = [f"{OTHER_DB}-{os.getpid()}.sock",  # a live process's socket
            f"{THIRD_DB}-{dead}.sock",  # a plain file named like a dead worker's socket
            f"{FOURTH_DB}-{dead}.sock",  # a symlink named like one
            "notes.txt"]
    live = plant_socket(os.path.join(folder, kept[0]), keep_open=True)
    write(os.path.join(folder, kept[1]))
    os.symlink(outside, os.path.join(folder, kept[2]))
    write(os.path.join(folder, kept[3]))
    try:
        worker = start_worker(env=worker_env)
        own = os.path.basename(worker_socket(app, worker))
        assert listing(folder) == sorted(kept + [own])
        assert read(outside) == read(os.path.join(folder, kept[1])) == "keep me"
        runs_a_task()
        assert "hints off" not in worker.output()
    finally:
        live.close()


def test_a_killed_worker_leaves_a_socket_the_next_worker_removes(
        private_tmp, worker_env, app, start_worker):
    first = start_worker(env=worker_env)
    left = worker_socket(app, first)
    first.kill_group()
    assert stat.S_ISSOCK(os.lstat(left).st_mode)
    second = start_worker(env=worker_env)
    assert listing(user_folder()) == [os.path.basename(worker_socket(app, second))]
    runs_a_task()
