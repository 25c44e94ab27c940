"""The worker command's life against real processes: warm and cold shutdown,
the three start methods, and two worker commands sharing one file."""
import contextlib
import os
import signal
import subprocess
import time
from collections import Counter

import pytest

from miniq.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from tests import tasks
from tests.conftest import ROOT, run_cli, wait_for

SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}


def alive(pid):
    """True while pid is a running process (a zombie has finished: it counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)],
                          capture_output=True, text=True).stdout.strip()
    return bool(stat) and not stat.startswith("Z")


def group_alive(pgid):
    """Live processes of a process group: a worker's children and any helper it started."""
    out = subprocess.run(["ps", "-A", "-o", "pid=,pgid=,stat="],
                         capture_output=True, text=True).stdout
    return [int(pid) for pid, group, stat in (line.split() for line in out.splitlines())
            if int(group) == pgid and not stat.startswith("Z")]


def assert_nothing_left(worker, children):
    wait_for(lambda: not any(alive(pid) for pid in children), timeout=15, interval=0.1,
             message=f"children {children} gone")
    wait_for(lambda: not group_alive(worker.pid), timeout=15, interval=0.1,
             message="no process left in the worker's group")


def deliver(worker, signum, to_group=False):
    """Send signum, then wait until the manager has taken it, so a second one is not merged.

    Linux shows pending signals in /proc; once taken, Python runs the handler before the
    manager does anything else. Elsewhere there is nothing to poll: allow half a second.
    """
    (os.killpg if to_group else os.kill)(worker.pid, signum)
    status = f"/proc/{worker.pid}/status"
    if not os.path.exists(status):
        time.sleep(0.5)
        return
    bit = 1 << (signum - 1)

    def taken():
        with open(status) as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return not (int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)) & bit
    wait_for(taken, timeout=10, interval=0.005, message=f"signal {signum} taken")


def rows(app, results):
    """(status, state, worker) of each task's row, straight from the database."""
    query = "SELECT status, state, worker FROM task WHERE id = ?"
    return [app.broker.db.execute(query, (r.id,)).fetchone() for r in results]


def start_gated(gate, n):
    """n tasks that run until the test creates the file gate, each returning its index.

    Waits until each task's code runs: STARTED alone means handed to a child, which may
    still be booting."""
    running = [tasks.wait_for_gate.delay(str(gate), i) for i in range(n)]
    wait_for(lambda: all(os.path.exists(f"{gate}.running.{i}") for i in range(n)),
             timeout=60, message="tasks running")
    assert [r.state for r in running] == ["STARTED"] * n
    return running


# 9. warm and cold shutdown ---------------------------------------------------------------

@pytest.mark.parametrize("name, to_group, times", [
    ("SIGTERM", False, 1),   # kill <pid>
    ("SIGTERM", False, 2),   # as Celery's: SIGTERM again is still warm
    ("SIGINT", False, 1),
    ("SIGINT", True, 1),     # Ctrl-C in a terminal reaches the whole group, children too
], ids=["SIGTERM", "SIGTERM-twice", "SIGINT", "ctrl-c-to-group"])
def test_warm_shutdown_finishes_running_tasks_and_leaves_queued_ones(
        app, start_worker, tmp_path, name, to_group, times):
    worker = start_worker("-c", "2")
    children = worker.children()
    gate = tmp_path / "gate"
    running = start_gated(gate, 2)
    queued = [tasks.add.delay(i, i) for i in range(3)]
    for _ in range(times):
        deliver(worker, SIGNALS[name], to_group)
    wait_for(lambda: "warm shutdown: waiting for 2 running task(s)" in worker.output(), 15,
             message="the warm shutdown said")  # else the first Ctrl-C seems to do nothing
    gate.touch()  # both children now free up; a worker still claiming would take the queue
    assert worker.wait(30) == 0, worker.output()
    assert [r.get(timeout=5) for r in running] == [0, 1]
    assert rows(app, queued) == [(0, "PENDING", None)] * 3
    assert_nothing_left(worker, children)


def test_sighup_restarts_a_worker_without_a_terminal_as_celerys(app, start_worker, tmp_path):
    """A warm shutdown, then the same command again in the same process: a service's
    reload runs the code as it is now."""
    pidfile = tmp_path / "worker.pid"
    worker = start_worker("-c", "1", "--pidfile", str(pidfile))
    children, gate = worker.children(), tmp_path / "gate"
    running = start_gated(gate, 1)
    deliver(worker, signal.SIGHUP)
    wait_for(lambda: "warm shutdown: waiting for 1 running task(s)" in worker.output(), 15,
             message="the warm shutdown said")
    gate.touch()
    wait_for(lambda: worker.output().count(" ready: ") == 2, 30, message="ready again")
    assert "restarting: " in worker.output() and worker.proc.poll() is None
    assert running[0].get(timeout=5) == 0 and tasks.add.delay(2, 3).get(timeout=15) == 5
    assert not set(children) & set(worker.children())  # new children, the same manager
    assert pidfile.read_text().strip() == str(worker.proc.pid)


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_stop_signal_during_a_restart_stops_the_worker_warm(app, start_worker, tmp_path,
                                                             name):
    """A service's reload, then its stop: no restart; and a first Ctrl-C then is warm."""
    worker = start_worker("-c", "1")
    gate = tmp_path / "gate"
    running = start_gated(gate, 1)
    deliver(worker, signal.SIGHUP)
    wait_for(lambda: "warm shutdown: waiting for 1 running task(s)" in worker.output(), 15,
             message="the warm shutdown said")
    deliver(worker, SIGNALS[name])
    wait_for(lambda: "restart called off: stopping" in worker.output(), 15,
             message="the stop signal heard")
    gate.touch()
    assert worker.wait(30) == 0, worker.output()
    assert running[0].get(timeout=5) == 0 and "restarting: " not in worker.output()
    assert "cold shutdown" not in worker.output()


@pytest.mark.parametrize("signum, status, said", [
    (signal.SIGTERM, 0, "warm shutdown: 0 tasks running, stopping now"),
    (signal.SIGQUIT, 1, "cold shutdown: stopping now, 0 running task(s) put back")],
    ids=["warm", "cold"])
def test_an_idle_worker_says_it_stops(app, start_worker, signum, status, said):
    worker = start_worker("-c", "1")
    deliver(worker, signum)
    assert worker.wait(30) == status, worker.output()
    assert said in worker.output()


@pytest.mark.parametrize("signals, to_group, env", [
    (["SIGINT", "SIGINT"], True, {}), (["SIGTERM", "SIGINT"], False, {}), (["SIGQUIT"], False, {}),
    (["SIGTERM"], False, {"REMAP_SIGTERM": "SIGQUIT"})],  # Celery's, as on Heroku
    ids=["ctrl-c-twice", "SIGTERM-then-SIGINT", "SIGQUIT", "SIGTERM-remapped-to-SIGQUIT"])
def test_a_cold_shutdown_requeues_running_tasks(app, start_worker, tmp_path, signals, to_group,
                                                env):
    worker = start_worker("-c", "2", env=env)
    children = worker.children()
    gate = tmp_path / "gate"
    running = start_gated(gate, 2)  # never released: only a cold shutdown ends them
    for name in signals:
        deliver(worker, getattr(signal, name), to_group)
    assert worker.wait(30) != 0, worker.output()
    assert "cold shutdown: stopping now, 2 running task(s) put back" in worker.output()
    assert_nothing_left(worker, children)
    assert rows(app, running) == [(0, "PENDING", None)] * 2
    assert [r.state for r in running] == ["PENDING"] * 2
    gate.touch()
    start_worker("-c", "2")
    assert [r.get(timeout=30) for r in running] == [0, 1]


def test_a_remap_sigterm_other_than_sigquit_is_refused_at_start(broker_url):
    done = run_cli("-A", "tests.tasks", "worker", "-c", "1", env={
        "MINIQ_BROKER_URL": broker_url, "REMAP_SIGTERM": "SIGINT"})
    assert done.returncode != 0 and "REMAP_SIGTERM='SIGINT': miniq takes SIGQUIT only" in done.stderr


# 10. start methods ----------------------------------------------------------------------------

def ps(field, pid):
    return subprocess.run(["ps", "-ww", "-o", f"{field}=", "-p", str(pid)],
                          capture_output=True, text=True).stdout.strip()


def assert_started_by(method, child, manager):
    """The child's lineage and command line match how the method starts processes."""
    parent = int(ps("ppid", child))
    if method == "forkserver":  # forked by the fork server, which the manager started
        assert parent != manager and int(ps("ppid", parent)) == manager
        assert "multiprocessing.forkserver" in ps("args", child)
    else:
        assert parent == manager
        assert ("multiprocessing.spawn" in ps("args", child)) == (method == "spawn")


def test_celery_57s_setting_chooses_the_start_method(start_worker):
    worker = start_worker("-c", "1", env={"MINIQ_TEST_CONF": '{"worker_pool_start_method": "spawn"}'})
    assert "1 child (spawn)" in worker.output()


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_children_work_under_each_start_method(app, start_worker, method):
    worker = start_worker("-c", "1", "--pool-start-method", method)  # Celery 5.7's name
    assert f"1 child ({method})" in worker.output()
    first = tasks.pid.delay().get(timeout=60)
    assert_started_by(method, first, worker.pid)
    assert tasks.add.delay(2, 3).get(timeout=30) == 5
    assert tasks.soft_catch.delay(10).get(timeout=30) == "cleaned up"
    with pytest.raises(SoftTimeLimitExceeded):
        tasks.soft_raise.delay(10).get(timeout=30)
    assert tasks.pid.delay().get(timeout=30) == first  # a soft limit costs no child
    with pytest.raises(TimeLimitExceeded):
        tasks.busy_loop.delay().get(timeout=30)
    wait_for(lambda: not alive(first), timeout=10, message="killed child gone")
    second = tasks.pid.delay().get(timeout=60)  # on the replacement child
    assert second != first
    assert_started_by(method, second, worker.pid)
    assert tasks.add.delay(1, 1).get(timeout=30) == 2


@pytest.mark.parametrize("name, method", [
    ("SIGTERM", "fork"),     # systemd's default stop: the whole group
    ("SIGTERM", "forkserver"),
    ("SIGTERM", "spawn"),
    ("SIGINT", "fork"),      # Ctrl-C in a terminal: the whole foreground group
    ("SIGINT", "forkserver"),
    ("SIGINT", "spawn"),
])
def test_group_wide_signal_is_a_warm_shutdown_under_each_start_method(
        app, start_worker, tmp_path, name, method):
    """Children and helper processes get the signal too, and must leave it to the manager."""
    worker = start_worker("-c", "2", "--start-method", method)
    gate = tmp_path / "gate"
    running = start_gated(gate, 2)
    deliver(worker, SIGNALS[name], to_group=True)
    gate.touch()
    assert worker.wait(30) == 0, worker.output()
    assert [r.get(timeout=5) for r in running] == [0, 1]
    wait_for(lambda: not group_alive(worker.pid), timeout=15, interval=0.1,
             message="no process left in the worker's group")


def test_a_group_wide_sigterm_leaves_the_programs_a_task_runs_alone(app, start_worker,
                                                                     tmp_path):
    """They inherit the child's ignored SIGTERM: the task's program ends its way."""
    worker = start_worker("-c", "1")
    gate = tmp_path / "gate"
    result = tasks.program_until_gate.delay(str(gate))
    wait_for(lambda: os.path.exists(f"{gate}.running.0"), timeout=30, message="program runs")
    deliver(worker, signal.SIGTERM, to_group=True)
    gate.touch()
    assert result.get(timeout=30) == 0
    assert worker.wait(30) == 0, worker.output()


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_sigusr1_to_a_child_still_importing_its_app_ends_nothing(app, start_worker,
                                                                   tmp_path, method):
    """Before it can take one (a hard limit's, a terminate's, a stray one), a child
    ignores SIGUSR1: its default would kill it, and fail the task it was given."""
    booting = tmp_path / "booting"
    start_worker("-c", "1", "--start-method", method,
                 env={"MINIQ_TEST_SLOW_IMPORT": str(booting)})
    sent = tasks.add.delay(2, 3)
    pids = wait_for(lambda: [int(p.name.rsplit(".", 1)[1]) for p in tmp_path.iterdir()
                             if p.name.startswith("booting.")], timeout=30,
                    message="the child importing its app")
    os.kill(pids[0], signal.SIGUSR1)
    assert sent.get(timeout=30) == 5


def test_a_worker_whose_fork_server_is_killed_serves_on(app, start_worker):
    """Its children die with it; fresh ones come from a new fork server."""
    worker = start_worker("-c", "4", "--start-method", "forkserver")
    assert [r.get(timeout=30) for r in [tasks.add.delay(i, i) for i in range(8)]] == [
        2 * i for i in range(8)]
    def servers():
        found = []
        for pid in worker.children():
            with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
                found += [pid] if b"forkserver" in f.read() else []
        return found
    first = servers()
    if not first:
        pytest.skip("no /proc to tell the fork server by")
    os.kill(first[0], signal.SIGKILL)
    wait_for(lambda: servers() and first[0] not in servers(), timeout=30,
             message="a new fork server")  # its children are started anew meanwhile
    assert [r.get(timeout=30) for r in [tasks.add.delay(i, i) for i in range(8)]] == [
        2 * i for i in range(8)]
    assert worker.proc.poll() is None, worker.output()


def test_a_worker_told_to_stop_as_its_children_start_stops_there(app, start_worker):
    """-c 1000 by mistake, then Ctrl-C: it starts no more children, and is never ready."""
    worker = start_worker("-c", "1000", ready=False)
    wait_for(lambda: len(group_alive(worker.pid)) > 2, timeout=30, interval=0.01,
             message="children starting")
    deliver(worker, signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()
    assert " ready: " not in worker.output()
    assert "warm shutdown as its children started" in worker.output()
    assert "wakeup fd" not in worker.output()  # the children's ends, heard without a word
    wait_for(lambda: not group_alive(worker.pid), timeout=15, interval=0.1,
             message="no process left in the worker's group")


SLOW_BOOT = """
import multiprocessing, time
from tests.tasks import app  # noqa: F401 - the app, its tasks registered
if multiprocessing.parent_process() is not None:
    time.sleep(2)  # a child still booting when its first task arrives
"""


@pytest.mark.parametrize("name, method", [
    ("SIGTERM", "fork"),  # children start with the manager's app loaded: no boot window
    ("SIGTERM", "spawn"),
    ("SIGINT", "spawn"),
])
def test_group_wide_signal_while_children_boot_is_a_warm_shutdown(
        app, start_worker, tmp_path, name, method):
    (tmp_path / "slowboot.py").write_text(SLOW_BOOT)
    worker = start_worker("-c", "1", "--start-method", method, app_path="slowboot",
                          env={"PYTHONPATH": os.pathsep.join([str(tmp_path), ROOT])})
    result = tasks.add.delay(2, 2)
    wait_for(lambda: result.state != "PENDING", message="task handed to the child")
    os.killpg(worker.pid, SIGNALS[name])
    assert worker.wait(30) == 0, worker.output()
    assert result.get(timeout=5) == 4


# 11. two worker commands, one database file ------------------------------------------------------

def test_two_workers_share_two_thousand_tasks_each_run_once(app, start_worker, tmp_path):
    runs = tmp_path / "runs.txt"
    first, second = start_worker("-c", "2"), start_worker("-c", "2")
    owner = {**{pid: "first" for pid in first.children()},
             **{pid: "second" for pid in second.children()}}
    assert len(owner) == 4
    results = [tasks.record.delay(str(runs), i) for i in range(2000)]
    count_done = "SELECT COUNT(*) FROM task WHERE status = 2"
    wait_for(lambda: app.broker.db.execute(count_done).fetchone()[0] == 2000, timeout=120,
             interval=0.1, message="2000 tasks done")
    for worker in (first, second):  # stopped, so no late second run can still write
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    assert Counter(r.state for r in results) == {"SUCCESS": 2000}
    assert [r.get(timeout=5) for r in results] == list(range(2000))
    lines = [line.split() for line in runs.read_text().splitlines()]
    assert sorted(int(token) for token, _ in lines) == list(range(2000))
    by_worker = Counter(owner.get(int(pid), f"stranger {pid}") for _, pid in lines)
    assert set(by_worker) == {"first", "second"}, by_worker
