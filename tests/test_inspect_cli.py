"""The command line as a user runs it (``python -m miniq -A tests.tasks ...``):
status, inspect, control, purge, result and call, in human form and with
--json; and ``app.control.inspect()``, ``ping()`` and ``shutdown()``, which
answer for live workers as Celery's do."""
import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import time
import types
from datetime import datetime, timedelta, timezone

import pytest

import miniq.app
from miniq import Miniq
from miniq.wake import machine_id
from tests import tasks
from tests.conftest import ROOT, module_worker, run_cli, wait_for

NODE = f"shared@{socket.gethostname()}"  # the node name of the module's shared worker
HERE = f"celery@{socket.gethostname()}"  # a worker's started without -n


def cli(broker_url, *args, **kwargs):
    return run_cli("-A", "tests.tasks", *args, env={"MINIQ_BROKER_URL": broker_url}, **kwargs)


def cli_json(broker_url, *args):
    out = cli(broker_url, *args, "--json")
    return out.returncode, json.loads(out.stdout)


def cli_with_input(broker_url, *args, stdin_text=None, stdin=None, timeout=30):
    """run_cli, but with something on stdin (purge asks before it deletes)."""
    env = dict(os.environ, MINIQ_BROKER_URL=broker_url)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "miniq", "-A", "tests.tasks", *args], cwd=ROOT,
                          env=env, input=stdin_text, stdin=stdin, capture_output=True, text=True,
                          timeout=timeout)


def count_rows(app, where="1"):
    return app.broker.db.execute(f"SELECT COUNT(*) FROM task WHERE {where}").fetchone()[0]


# -- status ------------------------------------------------------------------------

def test_status_pings_the_live_workers_and_exits_1_with_none(app, broker_url, start_worker):
    """As Celery's status: a ping, its replies by node, then how many; --json the replies."""
    typo = cli(broker_url + "x", "status")  # a reading command makes no database
    assert typo.returncode == 2 and "no database at" in typo.stderr
    assert not os.path.exists(app.broker.path + "x")
    app.broker.purge()  # the database, empty
    none = cli(broker_url, "status")
    assert none.returncode == 1 and "no nodes replied" in none.stderr
    worker = start_worker("-c", "2", "-Q", "a,b")
    shown = cli(broker_url, "status")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == f"->  {HERE}: OK\n\n1 node online.\n"  # Celery's: no reply shown
    assert cli_json(broker_url, "status") == (0, {HERE: {"ok": "pong"}})
    worker.signal(signal.SIGTERM)  # a warm shutdown takes the worker off the list
    assert worker.wait(30) == 0
    assert cli(broker_url, "status").returncode == 1


# -- inspect -----------------------------------------------------------------------

def test_inspect_from_the_command_line_gives_the_replies_of_app_control_inspect(
        app, broker_url, start_worker):
    """Each under its node name, as Celery's inspect prints them and --json gives them."""
    later = tasks.add.apply_async((1, 2), countdown=300)
    none = cli(broker_url, "inspect", "scheduled", "--json")
    assert none.returncode == 1 and not none.stdout  # no worker: no reply, as Celery's
    worker = start_worker("-c", "1")
    running = tasks.sleep.delay(60, "x")
    wait_for(lambda: running.state == "STARTED", timeout=30, message="the task to start")
    inspect = app.control.inspect()
    for what in ("active", "scheduled", "stats"):
        code, replies = cli_json(broker_url, "inspect", what)
        assert code == 0 and list(replies) == [HERE]
        asked = json.loads(json.dumps(getattr(inspect, what)(), default=str))
        if what == "stats":  # its uptime moves on
            assert replies[HERE].pop("uptime") <= asked[HERE].pop("uptime")  # asked after
        assert replies == asked, what
    [active] = cli_json(broker_url, "inspect", "active")[1][HERE]
    assert (active["id"], active["args"]) == (running.id, [60, "x"])
    [waiting] = cli_json(broker_url, "inspect", "scheduled")[1][HERE]
    assert waiting["request"]["id"] == later.id
    shown = cli(broker_url, "inspect", "stats").stdout
    assert shown.startswith(f"->  {HERE}: OK\n    {{\n") and f'"pid": {worker.pid}' in shown
    worker.kill_group()  # no need to wait out the sleep


# -- purge ---------------------------------------------------------------------------

def test_purge_force_deletes_queued_tasks_only(app, broker_url, start_worker):
    worker = start_worker("-c", "1", "-Q", "busy")
    running = tasks.sleep.apply_async((60,), queue="busy")
    wait_for(lambda: running.state == "STARTED", timeout=30, message="the task to start")
    for i in range(3):
        tasks.add.delay(i, i)
    kept = tasks.add.apply_async((9, 9), queue="other")
    finished = tasks.add.delay(0, 1)
    finished.revoke()
    some = cli(broker_url, "purge", "-f")  # as Celery's: the known queues, not every one
    assert some.returncode == 0 and "Purged 3 messages from 1 known task queue." in some.stdout
    assert kept.state == "PENDING" and count_rows(app, "status = 0") == 1
    code, out = cli_json(broker_url, "purge", "-Q", "other,celery", "-f")
    assert (code, out) == (0, {"purged": 1})
    assert count_rows(app, "status = 0") == 0
    none = cli(broker_url, "purge", "-f")
    assert none.returncode == 0 and "No messages purged from 1 queue." in none.stdout
    assert running.state == "STARTED" and finished.state == "REVOKED"  # not queued: kept
    worker.kill_group()  # no need to wait out the sleep


def test_control_purge_deletes_waiting_tasks_of_known_queues_and_says_how_many(app, monkeypatch):
    sent = [tasks.add.delay(i, i) for i in range(3)]
    sent.append(tasks.add.apply_async((1, 1), countdown=60))
    elsewhere = tasks.add.apply_async((1, 1), queue="other")
    assert app.control.purge() == 4
    assert [r.state for r in sent] == ["PENDING"] * 4 and count_rows(app, "status <= 0") == 1
    assert app.control.purge() == 0
    monkeypatch.setitem(app.conf, "task_queues", [types.SimpleNamespace(name="other")])
    assert app.control.purge() == 1 and elsewhere.state == "PENDING"


def test_purge_without_force_asks_and_deletes_only_on_yes(app, broker_url):
    for i in range(2):
        tasks.add.delay(i, i)
    tasks.add.apply_async((2, 2), queue="other")
    asked = cli_with_input(broker_url, "purge", "-Q", "other", stdin_text="n\n")
    assert "Delete 1 queued task of other? There is no undo. [y/N]" in asked.stdout
    no = cli_with_input(broker_url, "purge", stdin_text="n\n")
    assert "Delete 2 queued tasks of celery?" in no.stdout and "Nothing purged." in no.stdout
    assert no.returncode == 1 and count_rows(app) == 3
    yes = cli_with_input(broker_url, "purge", stdin_text="y\n")
    assert yes.returncode == 0 and "Purged 2 messages from 1 known task queue." in yes.stdout
    assert count_rows(app) == 1


def test_purge_without_force_and_no_answer_deletes_nothing_and_prints_no_traceback(app, broker_url):
    tasks.add.delay(1, 1)
    out = cli_with_input(broker_url, "purge", stdin=subprocess.DEVNULL)
    assert count_rows(app) == 1
    assert out.returncode == 1 and "Traceback" not in out.stderr


# -- result --------------------------------------------------------------------------

def test_result_prints_the_value_or_the_error(app, broker_url, start_worker):
    start_worker("-c", "2")
    ok, bad = tasks.add.delay(2, 3), tasks.fail.delay("boom")
    assert ok.get(timeout=30) == 5
    with pytest.raises(ValueError):
        bad.get(timeout=30)
    shown = cli(broker_url, "result", ok.id)  # as Celery's: the value alone
    assert shown.returncode == 0 and shown.stdout == "5\n"
    assert cli_json(broker_url, "result", ok.id) == (0, {"id": ok.id, "state": "SUCCESS", "result": 5})
    failed = cli(broker_url, "result", bad.id)
    assert failed.returncode == 1 and failed.stdout == ""
    assert "Traceback" in failed.stderr and failed.stderr.endswith("ValueError: boom\n")
    unknown = cli(broker_url, "result", "no-such-id")  # not PENDING: the file has no such row
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr == ("miniq: error: unknown task no-such-id:"
                              " never sent, or its result is gone\n")
    queued = tasks.add.apply_async((1, 1), queue="nobody")
    waited = cli(broker_url, "result", queued.id, "--timeout", "0.3")
    assert waited.returncode == 1 and "not done after 0.3s" in waited.stderr


def test_result_wait_waits_for_the_task_and_timeout_gives_up(app, broker_url, start_worker):
    pending = tasks.add.delay(1, 1)
    started = time.monotonic()
    gave_up = cli(broker_url, "result", pending.id, "--wait", "--timeout", "1")
    assert gave_up.returncode == 1 and "not done after 1.0s" in gave_up.stderr
    assert time.monotonic() - started >= 1.0

    env = dict(os.environ, MINIQ_BROKER_URL=broker_url)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    later = tasks.sleep.delay(0.5, "late")
    waiter = subprocess.Popen(
        [sys.executable, "-m", "miniq", "-A", "tests.tasks", "result", later.id, "--wait",
         "--timeout", "60", "--json"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        start_worker("-c", "1")  # only now can the task run: the command must be waiting
        out, err = waiter.communicate(timeout=60)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait(10)
    assert waiter.returncode == 0, err
    assert json.loads(out) == {"id": later.id, "state": "SUCCESS", "result": "late"}


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc")
def test_ctrl_c_in_a_waiting_command_is_aborted_as_celerys(app, broker_url):
    """Not a traceback: "Aborted!" and exit status 1, as Celery's commands end."""
    pending = tasks.add.delay(1, 1)
    env = dict(os.environ, MINIQ_BROKER_URL=broker_url)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    waiter = subprocess.Popen([sys.executable, "-m", "miniq", "-A", "tests.tasks", "result",
                               pending.id], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    fds = f"/proc/{waiter.pid}/fd"

    def waiting():  # it has opened the database: it reads the result
        return any(os.path.realpath(os.path.join(fds, fd)) == app.broker.path
                   for fd in os.listdir(fds))
    try:
        wait_for(waiting, timeout=30, message="the command to wait for the result")
        waiter.send_signal(signal.SIGINT)
        out, err = waiter.communicate(timeout=30)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait(10)
    assert (waiter.returncode, err, out) == (1, "Aborted!\n", "")
    assert pending.state == "PENDING"  # nothing lost


def test_result_wait_ends_the_progress_bar_line_when_the_task_ends(app, broker_url, start_worker):
    running = tasks.progress.delay(20, 0.1)
    env = dict(os.environ, MINIQ_BROKER_URL=broker_url)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    terminal, stderr = pty.openpty()  # the bar is drawn only on a terminal
    try:
        waiter = subprocess.Popen(
            [sys.executable, "-m", "miniq", "-A", "tests.tasks", "result", running.id, "--wait",
             "--timeout", "60"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        os.close(stderr)
        start_worker("-c", "1")  # only now can the task run: the command is already waiting
        out, _ = waiter.communicate(timeout=60)
        drawn = read_terminal(terminal)
    finally:
        os.close(terminal)
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait(10)
    assert waiter.returncode == 0 and out.strip() == str(running.get(timeout=10))
    assert re.search(r"\] 1?\d/20\r?\n$", drawn), repr(drawn)  # the last bar, then its newline


def read_terminal(fd):
    """All a closed pseudo-terminal holds (Linux ends it with EIO, macOS with b"")."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


# -- call ----------------------------------------------------------------------------

def test_call_sends_a_task_by_name_and_prints_its_id(app, broker_url, start_worker):
    start_worker("-c", "2")
    sent = cli(broker_url, "call", "tests.tasks.add", "--args", "[1, 2]")
    assert sent.returncode == 0, sent.stderr
    task_id = sent.stdout.strip()
    assert len(sent.stdout.splitlines()) == 1
    assert app.AsyncResult(task_id).get(timeout=30) == 3
    code, out = cli_json(broker_url, "call", "tests.tasks.add", "--args", "[1]", "--kwargs",
                         '{"y": 5}')
    assert code == 0 and app.AsyncResult(out["id"]).get(timeout=30) == 6
    queued = cli(broker_url, "call", "tests.tasks.add", "--args", "[0, 0]", "--queue", "elsewhere",
                 "--countdown", "300").stdout.strip()
    queue, eta, created = app.broker.db.execute(
        "SELECT queue, eta, created FROM task WHERE id = ?", (queued,)).fetchone()
    assert queue == "elsewhere" and 299 <= eta - created <= 301


def test_call_warns_about_a_name_the_app_lacks_and_sends_it_anyway(app, broker_url):
    sent = cli(broker_url, "call", "elsewhere.resize", "--args", "[1]")
    assert sent.returncode == 0
    assert sent.stderr == ("miniq: warning: 'elsewhere.resize' is not a task of tests.tasks;"
                           " sent anyway\n")
    assert app.AsyncResult(sent.stdout.strip()).state == "PENDING" and count_rows(app) == 1
    known = cli(broker_url, "call", "tests.tasks.add", "--args", "[1, 2]")
    assert known.returncode == 0 and known.stderr == ""
    wrong = cli(broker_url, "call", "tests.tasks.add", "--args", "[1, 2, 3]")  # as delay()
    assert wrong.returncode == 2 and "too many positional" in wrong.stderr
    assert count_rows(app) == 2  # it sent nothing


@pytest.mark.parametrize("option, value", [("--args", "[1,"), ("--kwargs", "{'y': 1}"),
                                           ("--args", "[" * 30_000 + "]" * 30_000)])
def test_call_with_bad_json_exits_2_with_one_line_and_sends_nothing(app, broker_url, option, value):
    out = cli(broker_url, "call", "tests.tasks.add", option, value)
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and "JSON" in out.stderr
    assert count_rows(app) == 0


@pytest.mark.parametrize("value", ['{"x": 1}', "5"])
def test_call_with_args_that_are_not_a_json_list_exits_2_and_sends_nothing(app, broker_url, value):
    out = cli(broker_url, "call", "tests.tasks.add", "--args", value)
    assert count_rows(app) == 0
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1


# -- app.control and the commands that address workers, on one shared worker ------------

@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    with module_worker(tmp_path_factory, "shared", "-n", "shared@%h") as worker:
        yield worker


@pytest.fixture
def on_shared(shared, monkeypatch):
    """This test sends to the shared worker's database; returns its broker URL."""
    url, worker = shared
    assert worker.proc.poll() is None, worker.output()
    monkeypatch.setenv("MINIQ_BROKER_URL", url)
    tasks.app.conf.broker_url = url
    yield url
    tasks.app.broker.close()


def test_ping_names_the_live_worker_and_is_none_for_no_one(on_shared):
    inspect, seen = tasks.app.control.inspect, []
    assert inspect().ping() == {NODE: {"ok": "pong"}}
    assert inspect(timeout=0.5).ping(destination=[NODE]) == {NODE: {"ok": "pong"}}
    assert tasks.app.control.ping(timeout=0.5) == [{NODE: {"ok": "pong"}}]
    assert inspect(destination=["other@host"]).ping() is None
    assert inspect(limit=1, callback=seen.append).ping() == {NODE: {"ok": "pong"}}
    assert seen == [{NODE: {"ok": "pong"}}]  # each reply as it comes, as Celery's callback
    assert tasks.app.control.ping(destination=["other@host"]) == []
    with pytest.raises(ValueError, match="list/tuple"):  # as Celery's: a list of names
        inspect(destination=NODE)
    with pytest.raises(TypeError, match="by destination, not by pattern"):  # refused, clearly
        inspect(pattern="shared@*")
    with pytest.raises(ValueError, match="number of workers"):  # not "all but the last"
        inspect(limit=-1)
    with pytest.raises(TypeError, match="matcher, pattern"):  # not: every worker stops
        tasks.app.control.shutdown(pattern="web@*", matcher="glob")
    shown = cli(on_shared, "inspect", "ping")
    assert (shown.returncode, shown.stdout) == (0, f"->  {NODE}: OK\n        pong\n\n1 node online.\n")
    assert cli_json(on_shared, "inspect", "ping", "-d", NODE) == (0, {NODE: {"ok": "pong"}})
    nobody = cli(on_shared, "inspect", "ping", "-d", "other@host,third@host", "-t", "0.5")
    assert nobody.returncode == 1 and nobody.stdout == ""
    assert nobody.stderr == ("miniq: error: no nodes replied: none of them is"
                             f" other@host,third@host; live: {NODE}\n")


def test_workers_that_share_a_name_are_told_apart_and_reached_by_it(on_shared):
    real = tasks.app.broker.workers()[0].id
    tasks.app.broker.register("twin-of-it", "host", os.getpid(), 1, ["celery"], machine_id(),
                              NODE)  # live: this process runs, on this machine
    try:
        both = {f"{NODE} {real[:8]}": {"ok": "pong"}, f"{NODE} twin-of-": {"ok": "pong"}}
        assert tasks.app.control.inspect().ping() == both
        assert tasks.app.control.inspect(destination=[NODE]).ping() == both
        one = tasks.app.control.inspect(destination=[f"{NODE} {real[:8]}"]).ping()
        assert list(one) == [f"{NODE} {real[:8]}"]
    finally:
        tasks.app.broker.unregister("twin-of-it")


def test_registered_lists_what_the_worker_registered_not_the_inspecting_app(
        on_shared, shared, monkeypatch):
    monkeypatch.setattr(miniq.app, "_default", miniq.app._default)  # Miniq() makes a default
    inspector = Miniq("inspector", broker=on_shared)

    @inspector.task(name="only.in.the.inspector")
    def local():
        """A task the worker never imported."""

    names = inspector.control.inspect().registered()[NODE]
    banner = re.findall(r"^  \. (\S+)$", shared[1].output(), re.MULTILINE)
    assert names == banner and "tests.tasks.add" in names and "only.in.the.inspector" not in names
    with pytest.raises(ValueError, match="names only"):  # Celery's task attributes: not recorded
        inspector.control.inspect().registered("rate_limit")
    inspector.broker.close()
    code, replies = cli_json(on_shared, "inspect", "registered")
    assert (code, replies) == (0, {NODE: names})
    shown = cli(on_shared, "inspect", "registered", "-d", NODE).stdout
    assert shown.startswith(f"->  {NODE}: OK\n    * ") and "\n    * tests.tasks.add\n" in shown


def test_active_queues_names_each_workers_queues_as_celery_s(on_shared):
    queues = [{"name": "celery", "exchange": {"name": "celery", "type": "direct"},
               "routing_key": "celery"}]
    assert tasks.app.control.inspect().active_queues() == {NODE: queues}
    assert cli_json(on_shared, "inspect", "active_queues") == (0, {NODE: queues})


def test_active_scheduled_reserved_and_stats_answer_as_celery_s(on_shared, shared, tmp_path):
    gate = tmp_path / "gate"
    running = tasks.wait_for_gate.delay(str(gate), "done")
    when = datetime(2030, 1, 1, 9, 0)  # a type Celery's JSON carries: shown as itself
    later = tasks.echo.apply_async((when,), countdown=300, priority=3)
    elsewhere = tasks.add.apply_async((1, 2), countdown=300, queue="no-worker-serves-it")
    try:
        wait_for(lambda: running.state == "STARTED", message="the gated task to start")
        inspect = tasks.app.control.inspect()
        [info] = inspect.active()[NODE]
        assert {key: info[key] for key in ("id", "name", "args", "kwargs", "type", "hostname")} == {
            "id": running.id, "name": "tests.tasks.wait_for_gate", "args": [str(gate), "done"],
            "kwargs": {}, "type": "tests.tasks.wait_for_gate", "hostname": NODE}
        assert abs(info["time_start"] - time.time()) < 60
        assert info["delivery_info"]["routing_key"] == "celery"
        assert info["acknowledged"] is True  # as Celery's: not acks_late, acked as it began
        assert inspect.active(safe=True)[NODE][0]["args"] == repr((str(gate), "done"))
        [waiting] = inspect.scheduled()[NODE]  # the one on a queue nobody serves: not listed
        assert waiting["request"]["id"] == later.id and waiting["priority"] == 6  # Celery's
        assert waiting["request"]["delivery_info"]["priority"] == 3
        assert waiting["request"]["args"] == [when]
        assert 250 < datetime.fromisoformat(waiting["eta"]).timestamp() - time.time() <= 301
        assert inspect.reserved() == {NODE: []}  # miniq never holds a task it does not run
        stats = inspect.stats()[NODE]
        assert (stats["pid"], stats["pool"]["max-concurrency"]) == (shared[1].pid, 2)
        assert 0 <= stats["uptime"] < 600
        reserved = cli(on_shared, "inspect", "reserved")
        assert reserved.stdout == f"->  {NODE}: OK\n    - empty -\n\n1 node online.\n"
        chosen = cli_json(on_shared, "inspect", "active", "-d", NODE)
        assert chosen[0] == 0 and list(chosen[1]) == [NODE]
    finally:
        gate.touch()
        revoked = cli(on_shared, "control", "revoke", later.id, elsewhere.id)
    assert running.get(timeout=30) == "done"
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout == f"tasks {later.id}, {elsewhere.id} flagged as revoked\n"
    assert later.state == elsewhere.state == "REVOKED"


def test_control_revoke_terminate_and_celery_s_terminate_end_running_tasks(on_shared):
    first = tasks.sleep.delay(60)
    second = tasks.sleep.delay(60)
    wait_for(lambda: first.state == second.state == "STARTED", message="both to start")
    by_flag = cli(on_shared, "control", "revoke", first.id, "--terminate", "--signal", "SIGKILL")
    by_celery_form = cli(on_shared, "control", "terminate", "KILL", second.id)
    assert by_flag.returncode == by_celery_form.returncode == 0, by_flag.stderr
    assert by_flag.stdout == f"tasks {first.id} flagged as revoked; running ones end by SIGKILL\n"
    wait_for(lambda: first.state == second.state == "REVOKED", message="both revoked")
    assert tasks.app.control.inspect().active() == {NODE: []}
    for bad in (["revoke", first.id, "--signal", "KILL"], ["terminate", "NOSUCH", first.id],
                ["revoke"], ["shutdown", first.id], ["revoke", first.id, "-d", NODE]):
        out = cli(on_shared, "control", *bad)
        assert out.returncode == 2 and "Traceback" not in out.stderr, (bad, out.stderr)
        assert re.search(r"^(usage: |miniq: error: )", out.stderr, re.M), (bad, out.stderr)


def test_control_revoke_replies_as_celery_s_workers(on_shared):
    running = tasks.sleep.delay(60)
    wait_for(lambda: running.state == "STARTED", message="it starts")
    control = tasks.app.control
    assert control.revoke(running.id, terminate=True, signal="SIGKILL", reply=True) == [
        {NODE: {"ok": f"terminate: {running.id}"}}]
    wait_for(lambda: running.state == "REVOKED", message="it ends")
    assert control.revoke(running.id, terminate=True, reply=True) == [
        {NODE: {"ok": "terminate: tasks unknown"}}]
    later, heard = tasks.add.apply_async((1, 1), countdown=60), []  # held for its eta
    assert control.terminate(later.id, reply=True, callback=heard.append) == heard == [
        {NODE: {"ok": f"terminate: {later.id}"}}]  # as Celery's: one it holds, unstarted
    assert later.state == "REVOKED"
    kept = tasks.add.apply_async((1, 1), countdown=60)
    with pytest.raises(ValueError, match="number of workers"):  # refused before it revokes
        control.revoke(kept.id, limit="2")
    assert kept.state == "PENDING"
    kept.revoke()
    for refused in ({"destination": [NODE]}, {}):  # Celery's would hold there only
        with pytest.raises(TypeError, match="destination"):  # also as its second argument
            control.revoke(running.id, *([] if refused else [[NODE]]), **refused)


def test_call_takes_celery_s_flags(on_shared):
    eta = datetime.now(timezone.utc) + timedelta(seconds=1)
    sent = cli(on_shared, "call", "tests.tasks.add", "-a", "[1, 2]", "--eta",
               eta.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    assert sent.returncode == 0, sent.stderr
    first = tasks.app.AsyncResult(sent.stdout.strip())
    keyed = cli(on_shared, "call", "tests.tasks.add", "-a", "[1]", "-k", '{"y": 5}',
                "--expires", "60").stdout.strip()
    late = cli(on_shared, "call", "tests.tasks.add", "-a", "[1, 1]", "--expires",
               "2000-01-01T00:00:00").stdout.strip()  # no zone: UTC, long past
    rows = {row[0]: row[1:] for row in tasks.app.broker.db.execute(
        "SELECT id, eta, expires, created FROM task")}
    assert abs(rows[first.id][0] - eta.timestamp()) < 0.001
    assert 59 <= rows[keyed][1] - rows[keyed][2] <= 61
    assert rows[late][1] == datetime(2000, 1, 1, tzinfo=timezone.utc).timestamp()
    assert first.get(timeout=30) == 3 and tasks.app.AsyncResult(keyed).get(timeout=30) == 6
    wait_for(lambda: tasks.app.AsyncResult(late).state == "REVOKED", message="expired")
    for flags in (["--eta", "tomorrow"], ["--expires", "soon"], ["--serializer", "pickle"],
                  ["--countdown", "nan"]):
        out = cli(on_shared, "call", "tests.tasks.add", "-a", "[1, 1]", *flags)
        assert out.returncode == 2 and "Traceback" not in out.stderr, (flags, out.stderr)


def test_result_traceback_prints_the_traceback_instead(on_shared):
    bad, good = tasks.fail.delay("boom"), tasks.add.delay(1, 1)
    with pytest.raises(ValueError):
        bad.get(timeout=30)
    assert good.get(timeout=30) == 2
    shown = cli(on_shared, "result", bad.id, "--traceback", "-t", "tests.tasks.fail")
    assert shown.returncode == 0 and shown.stderr == ""  # as Celery's
    assert shown.stdout.startswith("Traceback") and shown.stdout.endswith("ValueError: boom\n")
    code, out = cli_json(on_shared, "result", bad.id, "--traceback")
    assert (code, out["state"], out["traceback"]) == (0, "FAILURE", shown.stdout)
    none = cli(on_shared, "result", good.id, "--traceback")
    assert (none.returncode, none.stdout) == (0, "")


def test_nothing_answers_for_a_dead_or_silent_worker(app, broker_url):
    with subprocess.Popen(["true"]) as gone:
        pass
    app.broker.register("dead", "host", gone.pid, 1, ["celery"], machine_id())
    app.broker.register("silent", "host", os.getpid(), 1, ["celery"], machine_id())
    app.broker.db.execute("UPDATE worker SET heartbeat = heartbeat - 60 WHERE id = 'silent'")
    assert app.control.inspect().ping() is None and app.control.inspect().registered() is None
    assert app.control.ping() == [] and app.control.shutdown(reply=True) == []
    assert app.control.shutdown() is None  # as Celery's: no replies unless asked
    for command in (["inspect", "ping"], ["inspect", "stats", "-j"], ["control", "shutdown"]):
        out = cli(broker_url, *command)
        assert out.returncode == 1, (command, out.stderr)


def test_a_worker_whose_loop_stopped_answers_no_ping(app, broker_url):
    """As Celery's: a worker stopped (SIGSTOP) gives no pong, though it still counts as
    live (its tasks are not recovered) until worker_lost_after."""
    app.broker.register("stopped", "host", os.getpid(), 1, ["celery"], machine_id())
    app.broker.db.execute("UPDATE worker SET heartbeat = heartbeat - 3 WHERE id = 'stopped'")
    assert app.control.inspect().ping() is None and app.control.ping() == []
    assert app.control.inspect(timeout=5).ping() is not None  # within a longer wait
    assert cli(broker_url, "inspect", "ping").returncode == 1
    assert cli(broker_url, "status").returncode == 1  # status is a ping, as Celery's


def test_control_shutdown_stops_every_chosen_worker_whatever_its_limit(app, start_worker):
    """As Celery's: limit caps the replies it collects, not the workers it stops."""
    app.broker.register("far", "otherhost", 1, 1, ["celery"], "another machine", "far@otherhost")
    worker = start_worker("-c", "1")  # registered after: listed second
    heard = []
    assert [list(reply) for reply in app.control.shutdown(limit=1, reply=True,
                                                          callback=heard.append)] == [
        ["far@otherhost"]] == [list(reply) for reply in heard]
    assert worker.wait(30) == 0


def test_control_shutdown_stops_the_worker_warm_and_reports_one_it_cannot_reach(
        app, broker_url, start_worker, tmp_path):
    """The worker is named with -n, whose %n names its pid and log files, as Celery's."""
    log, pidfile, gate = tmp_path / "stopme.log", tmp_path / "stopme.pid", tmp_path / "gate"
    worker = start_worker("-c", "2", "-n", "stopme@%h", "--pidfile", str(tmp_path / "%n.pid"),
                          "--logfile", str(tmp_path / "%n%I.log"), ready=False)
    wait_for(lambda: log.exists() and "ready" in log.read_text() or worker.proc.poll(),
             message="worker ready in its log file")
    assert pidfile.read_text() == f"{worker.pid}\n"
    running = tasks.wait_for_gate.delay(str(gate), "finished")
    wait_for(lambda: os.path.exists(f"{gate}.running.finished"), message="the task to start")
    app.broker.register("far", "otherhost", 1, 1, ["celery"], "another machine", "far@otherhost")
    out = cli(broker_url, "control", "shutdown")
    node = f"stopme@{socket.gethostname()}"
    assert out.returncode == 1  # one worker could not be reached
    assert f"->  {node}: OK\n        shutting down\n" in out.stdout
    assert ("->  far@otherhost: ERROR\n        pid 1 runs on another machine, container or boot"
            " (otherhost): stop it there\n") in out.stdout
    assert worker.proc.poll() is None  # warm: it waits for its running task
    gate.touch()
    assert running.get(timeout=30) == "finished"
    assert worker.wait(30) == 0 and not pidfile.exists()
    assert app.control.inspect(destination=[node]).ping() is None
