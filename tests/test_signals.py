"""Celery's signals, sent where Celery sends them (the producer, the worker's
manager, its children) with Celery's sender and arguments, and the ``self.request``
fields a task reads. One worker of tests/signal_tasks.py serves most of the module;
the receivers of every process append what they got to one file, read here."""
import gc
import importlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta

import pytest

import miniq.app
import miniq.project
from miniq import Miniq, chain, group, signals
from miniq.exceptions import Reject, TaskRevokedError, TimeLimitExceeded, WorkerLostError
from miniq.utils.log import TASK_FORMAT
from miniq.worker import LOG_FORMAT
from tests.conftest import ROOT, WorkerProcess, wait_for

HOST = socket.gethostname()
ANY_TIME = ("heartbeat_sent", "task_received")
DELIVERY = {"exchange": "", "routing_key": "celery", "priority": 0, "redelivered": False}


@pytest.fixture(scope="module")
def tasks():
    """tests.signal_tasks, without making its app the default one other tests use; its
    receivers leave with the module, so later tests send no signals."""
    saved = miniq.app._default
    module = importlib.import_module("tests.signal_tasks")
    miniq.app._default = saved
    yield module
    module.LOG = None
    for value in vars(signals).values():
        if isinstance(value, signals.Signal):
            value.receivers.clear()
    module.app.broker.close()


class SignalWorker:
    """A worker of tests.signal_tasks with its own database, and what the receivers
    wrote; this process sends to it (and records to its file) until it stops."""

    def __init__(self, tasks, folder, *options, env=None):
        self.tasks, self.log = tasks, folder / "signals.jsonl"
        url = f"sqlite:///{folder / 'signals.db'}"
        environ = dict(os.environ, MINIQ_BROKER_URL=url, MINIQ_SIGNAL_LOG=str(self.log),
                       PYTHONFAULTHANDLER="1", **(env or {}))
        environ["PYTHONPATH"] = ROOT + os.pathsep + environ.get("PYTHONPATH", "")
        self.before = tasks.app.conf.broker_url, tasks.LOG
        tasks.app.broker.close()
        tasks.app.conf.broker_url, tasks.LOG = url, str(self.log)
        args = ["-A", "tests.signal_tasks", "worker", "-l", "info", *options]
        self.process = WorkerProcess(args, environ, folder / "worker.log")
        self.pid = self.process.pid

    def mark(self):
        """How many lines were written: a ``since`` for what comes next."""
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0

    def events(self, name=None, since=0):
        """The lines written from the since-th on: of one signal (or a tuple of them) if
        named, else all but those the manager sends at any time (heartbeats, receipts)."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        seen = [json.loads(line) for line in lines[since:]]
        names = (name,) if isinstance(name, str) else name
        return [e for e in seen
                if (e["signal"] in names if names else e["signal"] not in ANY_TIME)]

    def stop(self):
        """A warm shutdown; its exit status. Then this process sends where it did before."""
        self.process.signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        finally:
            self.process.kill_group()
            self.tasks.app.broker.close()
            self.tasks.app.conf.broker_url, self.tasks.LOG = self.before


@pytest.fixture(scope="module")
def worker(tasks, tmp_path_factory):
    served = SignalWorker(tasks, tmp_path_factory.mktemp("signals"), "-c", "2")
    try:
        served.process.wait_ready()
        wait_for(lambda: len(served.events("worker_process_init")) == 2,
                 message="both children started")
        yield served
    finally:
        served.stop()


def test_an_app_with_receivers_logs_its_tasks_prints_and_lines_as_celerys(tasks, worker):
    result = tasks.prints.delay()
    result.get(timeout=20)
    wait_for(lambda: "logged by task" in worker.process.output(), message="the task's line")
    out = worker.process.output()
    assert re.search(r"WARNING/ForkPoolWorker-\d\] printed by task", out), out
    assert "INFO/ForkPoolWorker-" in out and f"tests.signal_tasks.prints[{result.id}]:" \
        f" logged by task" in out, out


def one(events):
    assert len(events) == 1, events
    return events[0]


def awaited(worker, name, since, count=1):
    """The events of one signal, once count have come: as Celery's, a worker stores a
    run's outcome before the hooks and receivers after it run."""
    wait_for(lambda: len(worker.events(name, since)) >= count, message=f"{count} {name}")
    return worker.events(name, since)


# -- tasks ------------------------------------------------------------------------------

def test_a_success_sends_publish_prerun_success_and_postrun(tasks, worker):
    since = worker.mark()
    result = tasks.add.delay(2, 3)
    assert result.get(timeout=20) == 5
    seen = worker.events(since=since)
    before = one([e for e in seen if e["signal"] == "before_task_publish"])
    assert before["pid"] == os.getpid() and before["sender"] == "tests.signal_tasks.add"
    assert before["body"] == [[2, 3], {}, {"callbacks": None, "errbacks": None,
                                           "chain": None, "chord": None}]
    assert (before["exchange"], before["routing_key"]) == ("", "celery")
    headers = before["headers"]
    assert (headers["id"], headers["task"], headers["root_id"]) == (result.id, "tests.signal_tasks.add", result.id)
    assert headers["parent_id"] is None and headers["timelimit"] == [None, None]
    assert (headers["argsrepr"], headers["kwargsrepr"], headers["ignore_result"]) == (
        "(2, 3)", "{}", False)  # Celery's protocol 2 headers, as its receivers read them
    assert headers["origin"] == f"gen{os.getpid()}@{HOST}" and headers["stamps"] == {}
    assert one([e for e in seen if e["signal"] == "after_task_publish"])["headers"]["id"] == result.id
    assert one([e for e in seen if e["signal"] == "before_task_publish of add"])["pid"] == os.getpid()
    def in_the_child():  # as Celery's: task_success after the result is stored
        return [e for e in worker.events(since=since) if e["pid"] not in (os.getpid(), worker.pid)]
    wait_for(lambda: len(in_the_child()) >= 4, message="the run's four signals")
    run = in_the_child()
    assert [e["signal"] for e in run] == ["task_prerun", "task_success", "task_success of add",
                                          "task_postrun"]
    prerun, success, _, postrun = run
    assert prerun["sender"] == prerun["task"] == "task tests.signal_tasks.add"
    assert (prerun["task_id"], prerun["args"], prerun["kwargs"]) == (result.id, [2, 3], {})
    assert success["result"] == 5 and success["runtime"] >= 0
    assert (postrun["task_id"], postrun["retval"], postrun["state"]) == (result.id, 5, "SUCCESS")
    assert worker.events("task_success of the name add") == []  # a task's sender is the task


def test_a_failure_and_a_retry_send_theirs(tasks, worker):
    since = worker.mark()
    failed = tasks.fail.delay("bad")
    with pytest.raises(ValueError):
        failed.get(timeout=20)
    failure = one(awaited(worker, "task_failure", since))
    assert failure["sender"] == "task tests.signal_tasks.fail" and failure["task_id"] == failed.id
    assert (failure["exception"], failure["args"], failure["kwargs"]) == ("ValueError: bad", ["bad"], {})
    assert (failure["traceback"], failure["einfo"]) == ("traceback", "ExceptionInfo")
    assert one(awaited(worker, "task_postrun", since))["state"] == "FAILURE"
    since = worker.mark()
    retried = tasks.retry_once.delay()
    assert retried.get(timeout=20) == "retried"
    retry = one(awaited(worker, "task_retry", since))
    assert retry["request"]["id"] == retried.id and retry["einfo"] == "ExceptionInfo"
    assert retry["reason"].startswith("Retry: Retry in ") and "KeyError('again')" in retry["reason"]
    assert [e["state"] for e in awaited(worker, "task_postrun", since, 2)] == ["RETRY", "SUCCESS"]


def test_ignore_and_reject_send_postrun_and_a_rejection_fails(tasks, worker):
    for task, state, after in ((tasks.ignored, "IGNORED", []),
                               (tasks.rejected, "REJECTED", ["task_failure"])):
        since, expected = worker.mark(), ["task_prerun", "task_postrun", *after]
        result = task.delay()

        def sent_by_the_child():  # task_failure, if any, comes after task_postrun
            return [e for e in worker.events(since=since) if e["pid"] != os.getpid()]
        wait_for(lambda: len(sent_by_the_child()) >= len(expected), message=" ".join(expected))
        run = sent_by_the_child()
        assert [e["signal"] for e in run] == expected
        postrun = run[1]
        assert (postrun["task_id"], postrun["state"]) == (result.id, state)
    assert run[-1]["task_id"] == result.id and run[-1]["exception"].startswith("Reject: ")


def test_the_manager_sends_task_received_and_task_unknown_as_it_takes_tasks(tasks, worker):
    since = worker.mark()
    known = tasks.add.delay(2, 3)
    assert known.get(timeout=20) == 5
    unknown = tasks.app.send_task("tests.signal_tasks.nosuch", (1,))
    with pytest.raises(KeyError, match="nosuch"):  # as Celery's: NotRegistered
        unknown.get(timeout=20)
    expired = tasks.add.apply_async((1, 1), expires=-1)  # as Celery's: discarded, not received
    with pytest.raises(TaskRevokedError):
        expired.get(timeout=20)
    assert f"Discarding revoked task: tests.signal_tasks.add[{expired.id}]" in (
        worker.process.output())
    received = worker.events("task_received", since)
    assert [(e["pid"], e["sender"], e["request"]["id"]) for e in received] == [
        (worker.pid, "Worker", known.id)]  # the unknown task: task_unknown instead
    request = received[0]["request"]  # as Celery's worker Request: its fields by both names
    assert [request[key] for key in ("task_id", "task_name", "name", "root_id", "parent_id")] \
        == [known.id, "tests.signal_tasks.add", "tests.signal_tasks.add", known.id, None]
    order = [e["signal"] for e in worker.events(("task_received", "task_prerun"), since)]
    assert order == ["task_received", "task_prerun"]  # as it is taken, before it runs
    missing = one(worker.events("task_unknown", since))
    assert (missing["pid"], missing["name"], missing["id"], missing["message"]) == (
        worker.pid, "tests.signal_tasks.nosuch", unknown.id, "Message")
    assert missing["exc"].startswith("NotRegistered")


def test_the_manager_sends_what_it_decides_itself(tasks, worker):
    since = worker.mark()
    with pytest.raises(TimeLimitExceeded):
        tasks.stuck.delay().get(timeout=20)
    failure = one(worker.events("task_failure", since))
    assert failure["pid"] == worker.pid and failure["sender"] == "task tests.signal_tasks.stuck"
    assert failure["exception"].startswith("TimeLimitExceeded") and failure["args"] == []
    running = tasks.sleep.delay(30)
    wait_for(lambda: running.state == "STARTED", message="the task running")
    running.revoke(terminate=True, signal="SIGKILL")
    with pytest.raises(TaskRevokedError):
        running.get(timeout=20)
    expired = tasks.sleep.apply_async((0,), expires=-1)
    with pytest.raises(TaskRevokedError):
        expired.get(timeout=20)
    revoked = worker.events("task_revoked", since)
    assert [(e["pid"], e["request"]["id"], e["terminated"], e["signum"], e["expired"])
            for e in revoked] == [(worker.pid, running.id, True, 9, False),
                                  (worker.pid, expired.id, False, None, True)]
    assert revoked[0]["sender"] == "task tests.signal_tasks.sleep"
    assert revoked[0]["request"]["delivery_info"] == {
        "exchange": "", "routing_key": "celery", "priority": 0, "redelivered": False}
    # as Celery's: the expired task's request carries its expiry, in ISO 8601 UTC
    assert datetime.fromisoformat(revoked[1]["request"]["expires"]).timestamp() < time.time()


def test_a_reserved_task_revoked_before_it_begins_is_announced(tasks, worker, tmp_path):
    """As Celery's worker, when it reaches a revoked task it holds: task_revoked."""
    since, gate = worker.mark(), tmp_path / "gate"
    blockers = [tasks.wait_for_gate.delay(str(gate), i) for i in range(2)]  # both children
    wait_for(lambda: all(r.state == "STARTED" for r in blockers), message="both blocked")
    held = tasks.add.delay(1, 1)
    wait_for(lambda: tasks.app.broker.active(reserved=True), message="the task reserved")
    held.revoke()
    gate.touch()
    assert [r.get(timeout=20) for r in blockers] == [0, 1]
    revoked = wait_for(lambda: worker.events("task_revoked", since), message="task_revoked")
    assert [(e["request"]["id"], e["terminated"], e["expired"]) for e in revoked] == [
        (held.id, False, False)]


def test_tasks_revoked_while_queued_or_waiting_for_their_eta_are_announced(tasks, worker,
                                                                           tmp_path):
    """As Celery's worker, as it reaches a task revoked in the queue: task_revoked in the
    manager, once, neither terminated nor expired; the result is REVOKED at once."""
    since, gate = worker.mark(), tmp_path / "gate"
    blockers = [tasks.wait_for_gate.delay(str(gate), i) for i in range(2)]  # both children
    wait_for(lambda: all(r.state == "STARTED" for r in blockers), message="both blocked")
    queued, later = tasks.add.delay(1, 1), tasks.add.apply_async((2, 2), countdown=600)
    for result in (queued, later):
        result.revoke()
        assert result.state == "REVOKED"
    gate.touch()
    assert [r.get(timeout=20) for r in blockers] == [0, 1]
    revoked = wait_for(lambda: len(worker.events("task_revoked", since)) >= 2 and
                       worker.events("task_revoked", since), message="task_revoked")
    assert sorted((e["pid"], e["request"]["id"], e["terminated"], e["signum"], e["expired"])
                  for e in revoked) == sorted((worker.pid, r.id, False, None, False)
                                              for r in (queued, later))
    assert {e["sender"] for e in revoked} == {"task tests.signal_tasks.add"}
    assert sum(e["request"]["eta"] is not None for e in revoked) == 1  # the later one's
    assert tasks.add.delay(3, 3).get(timeout=20) == 6  # a claim after: none announced twice
    assert len(worker.events("task_revoked", since)) == 2


def test_publish_receivers_may_change_the_arguments(tasks, worker):
    """As in Celery, before_task_publish's body is what is sent."""
    def inject(sender=None, body=None, **named):
        if sender == tasks.add.name:
            body[0][1] = 40

    signals.before_task_publish.connect(inject)
    try:
        assert tasks.add.delay(2, 3).get(timeout=20) == 42
    finally:
        signals.before_task_publish.disconnect(inject)


def test_receivers_that_raise_are_logged_and_stop_nothing(tasks, worker):
    children = worker.process.children()
    assert [tasks.add.delay(i, i).get(timeout=20) for i in range(3)] == [0, 2, 4]
    with pytest.raises(ValueError):
        tasks.fail.delay().get(timeout=20)
    assert worker.process.children() == children
    out = worker.process.output()
    for name in ("worker_process_init", "worker_ready", "task_prerun", "task_postrun",
                 "task_success", "task_failure"):
        assert f"RuntimeError: a bug in a {name} receiver" in out, name


def test_an_import_modules_receiver_that_raises_stops_the_load(tmp_path):
    """As Celery's: the worker would start without what that receiver imports."""
    app = Miniq("loading", broker=f"sqlite:///{tmp_path / 'l.db'}", set_as_current=False)

    def broken(sender, **kwargs):
        raise LookupError("no such settings")
    signals.import_modules.connect(broken, sender=app)
    try:
        with pytest.raises(LookupError, match="no such settings"):
            app.import_includes()
    finally:
        signals.import_modules.disconnect(broken, sender=app)


def test_receivers_that_exit_in_the_manager_stop_nothing(tasks, tmp_path):
    """worker_ready, and task_failure and task_revoked for what the manager decides (a
    lost child, an expired task) are sent by the manager: a receiver's sys.exit() there
    is logged, and the worker serves on."""
    served = SignalWorker(tasks, tmp_path, "-c", "1", env={"MINIQ_EXITING_RECEIVERS": "1"})
    try:
        served.process.wait_ready()
        lost, expired = tasks.dies.delay(), tasks.add.apply_async((1, 1), expires=-1)
        with pytest.raises(WorkerLostError):
            lost.get(timeout=20)
        with pytest.raises(TaskRevokedError):
            expired.get(timeout=20)
        assert tasks.add.delay(2, 2).get(timeout=20) == 4
        out = served.process.output()
        for name in ("worker_ready", "task_failure", "task_revoked"):
            assert f"SystemExit: a {name} receiver exits" in out, name
    finally:
        assert served.stop() == 0


def test_beat_announces_itself_in_a_worker_and_alone(tasks, tmp_path):
    """As Celery's: beat_init as a beat starts, then beat_embedded_init in a worker's -B."""
    served = SignalWorker(tasks, tmp_path, "-c", "1", "-B")
    try:
        served.process.wait_ready()
        seen = wait_for(lambda: served.events(("beat_init", "beat_embedded_init")),
                        message="the embedded beat's signals")
        assert [(e["signal"], e["pid"], e["sender"]) for e in seen] == [
            ("beat_init", served.pid, "Beat"), ("beat_embedded_init", served.pid, "Beat")]
    finally:
        assert served.stop() == 0
    alone = WorkerProcess(["-A", "tests.signal_tasks", "beat"], dict(
        os.environ, MINIQ_BROKER_URL=f"sqlite:///{tmp_path / 'beat.db'}",
        MINIQ_SIGNAL_LOG=str(tmp_path / "beat.jsonl"),
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")), tmp_path / "beat.log")
    try:
        log = tmp_path / "beat.jsonl"
        wait_for(lambda: log.exists() and "beat_init" in log.read_text(),
                 message="the beat's beat_init")
        assert [json.loads(line)["signal"] for line in log.read_text().splitlines()
                if "beat_" in line] == ["beat_init"]
    finally:
        alone.kill_group()


def test_the_worker_announces_itself(worker):
    manager = {e["signal"]: e for e in worker.events() if e["pid"] == worker.pid}
    assert manager["celeryd_init"]["sender"] == f"celery@{HOST}"
    assert manager["celeryd_init"]["instance"] == "Worker"
    assert manager["celeryd_init"]["options"]["concurrency"] == 2
    assert manager["celeryd_init"]["options"]["loglevel"] == logging.INFO  # a number, as Celery's
    assert manager["worker_init"]["sender"] == manager["worker_ready"]["sender"] == "Worker"
    assert manager["import_modules"]["sender"] == "Miniq"
    after = manager["celeryd_after_setup"]
    assert (after["sender"], after["instance"]) == (f"celery@{HOST}", "Worker")
    assert after["conf"]["worker_concurrency"] is None  # app.conf, as a dict here
    creating = [e for e in worker.events("worker_before_create_process")]
    assert len(creating) >= 2 and {(e["pid"], e["sender"]) for e in creating} == {
        (worker.pid, "Worker")}
    beats = wait_for(lambda: worker.events("heartbeat_sent"), message="a heartbeat")
    assert {(e["pid"], e["sender"]) for e in beats} == {(worker.pid, "Worker")}
    logger = manager["after_setup_logger"]
    assert (logger["logger"], logger["loglevel"], logger["logfile"], logger["format"]) == (
        "RootLogger", logging.INFO, None, LOG_FORMAT)
    inits = worker.events("worker_process_init")
    assert {e["sender"] for e in inits} == {f"celery@{HOST}"}
    assert len({e["pid"] for e in inits} - {worker.pid}) >= 2


@pytest.mark.parametrize("method, options", [
    ("fork", ["-n", "w1@%h"]),
    ("forkserver", []),
    ("spawn", ["--logfile", "LOGFILE"]),
])
def test_children_start_and_stop_with_signals_under_each_start_method(
        tasks, tmp_path, method, options):
    """Under spawn a receiver takes logging over (in the manager and each child, each a
    fresh interpreter); forked children inherit the manager's."""
    options = [str(tmp_path / "file.log") if o == "LOGFILE" else o for o in options]
    env = {"MINIQ_TAKE_LOGGING": "1"} if method == "spawn" else {}
    served = SignalWorker(tasks, tmp_path, "-c", "2", "--start-method", method, *options,
                          env=env)
    try:
        wait_for(lambda: served.events("worker_ready"), message="worker ready")
        node = f"w1@{HOST}" if method == "fork" else f"celery@{HOST}"
        assert tasks.request_fields.delay().get(timeout=60)["hostname"] == node
        inits = wait_for(lambda: len(served.events("worker_process_init")) == 2
                         and served.events("worker_process_init"), message="two children")
        children = {e["pid"]: e for e in inits}
        assert len(children) == 2 and served.pid not in children
        assert {e["sender"] for e in children.values()} == {node}
    finally:
        assert served.stop() == 0
    ends = {e["pid"]: e for e in served.events("worker_process_shutdown")}
    assert ends.keys() == children.keys()
    assert {(e["sender"], e["exitcode"], e["pid"] == pid) for pid, e in ends.items()} == {
        (node, 0, True)}
    assert one(served.events("worker_shutdown"))["pid"] == served.pid
    stopping = one(served.events("worker_shutting_down"))
    assert (stopping["pid"], stopping["sender"], stopping["sig"], stopping["how"],
            stopping["exitcode"]) == (served.pid, node, "SIGTERM", "Warm", 0)
    assert [e["signal"] for e in served.events() if e["signal"].startswith("worker_shut")] == [
        "worker_shutting_down", "worker_shutdown"]
    setups = served.events("setup_logging")
    if method == "spawn":
        assert {e["pid"] for e in setups} == {served.pid, *children}
        assert {(e["loglevel"], e["format"]) for e in setups} == {(logging.INFO, LOG_FORMAT)}
        assert {e["logfile"] for e in setups if e["pid"] == served.pid} == {options[1]}
        assert served.events("after_setup_logger") == []
        assert "custom [" in open(options[1]).read()  # the receiver's format
    else:  # forked children inherit the manager's logging; forkserver's set up their own
        assert setups == []
        configured = {e["pid"] for e in served.events("after_setup_logger")}
        assert configured == ({served.pid} if method == "fork" else {served.pid, *children})


def test_a_cold_shutdown_is_told_as_celerys(tasks, tmp_path):
    served = SignalWorker(tasks, tmp_path, "-c", "1")
    try:
        wait_for(lambda: served.events("worker_ready"), message="worker ready")
        served.process.signal(signal.SIGQUIT)
        assert served.process.wait(30) == 1
    finally:
        served.stop()
    stopping = one(served.events("worker_shutting_down"))
    assert (stopping["pid"], stopping["sig"], stopping["how"], stopping["exitcode"]) == (
        served.pid, "SIGQUIT", "Cold", 1)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_handlers_after_setup_logger_and_task_logger_add_hear_the_childrens_tasks(
        tasks, tmp_path, method):
    """As Celery's: a forked child keeps the logging its manager set up, receivers' too;
    the task loggers' lines reach the handlers of celery.task, not the root's."""
    path, tasks_path = tmp_path / "too.log", tmp_path / "too.log.tasks"
    served = SignalWorker(tasks, tmp_path, "-c", "1", "--start-method", method,
                          env={"MINIQ_LOG_FILE_TOO": str(path)})
    try:
        tasks.prints.delay().get(timeout=60)
        wait_for(lambda: "logged by task" in tasks_path.read_text(), message="the task's line")
        wait_for(lambda: "logged by a plain logger" in path.read_text(), message="a plain line")
        assert "printed by task" in path.read_text() and "printed" not in tasks_path.read_text()
        assert "logged by task" not in path.read_text()
    finally:
        assert served.stop() == 0
    logger = one([e for e in served.events("after_setup_task_logger") if e["pid"] == served.pid])
    assert (logger["logger"], logger["loglevel"], logger["format"]) == (
        "Logger", logging.INFO, TASK_FORMAT)


# -- self.request ---------------------------------------------------------------------

def test_idle_children_of_a_killed_manager_stop_as_if_told(tasks, tmp_path):
    """Orphaned while idle, a child stops cleanly: its worker_process_shutdown runs
    (mid-task it is killed instead, as nobody would record the outcome)."""
    served = SignalWorker(tasks, tmp_path, "-c", "2")
    try:
        served.process.wait_ready()
        inits = wait_for(lambda: len(served.events("worker_process_init")) == 2
                         and served.events("worker_process_init"), message="two children")
        os.kill(served.pid, signal.SIGKILL)  # the manager only
        served.process.wait(10)
        ends = wait_for(lambda: len(served.events("worker_process_shutdown")) == 2
                        and served.events("worker_process_shutdown"), timeout=15,
                        message="both children stopped by themselves")
        assert {e["pid"] for e in ends} == {e["pid"] for e in inits}
    finally:
        served.stop()


def test_request_fields_of_a_plain_call(tasks, worker):
    result = tasks.request_fields.delay()
    fields = result.get(timeout=20)
    assert fields == {"id": result.id, "task": "tests.signal_tasks.request_fields",
                      "hostname": f"celery@{HOST}", "delivery_info": DELIVERY,
                      "root_id": result.id, "parent_id": None, "group": None, "eta": None,
                      "expires": None, "timelimit": [None, None], "time_limit": None,
                      "soft_time_limit": None, "headers": {"x_trace": "t-1"},
                      "x_trace": "t-1", "retries": 0}  # x_trace: a publish receiver's


def test_request_fields_of_a_call_with_options(tasks, worker):
    fields = tasks.request_fields.apply_async(
        countdown=0.2, expires=60, priority=7, time_limit=20, soft_time_limit=10,
        headers={"x_note": 1}).get(timeout=20)
    eta, expires = datetime.fromisoformat(fields["eta"]), datetime.fromisoformat(fields["expires"])
    assert eta.utcoffset() == expires.utcoffset() == timedelta(0)
    assert timedelta(seconds=59) < expires - eta < timedelta(seconds=60)
    assert fields["delivery_info"] == {**DELIVERY, "priority": 7}
    assert (fields["timelimit"], fields["time_limit"], fields["soft_time_limit"]) == ([20, 10], 20, 10)
    assert fields["headers"] == {"x_note": 1, "x_trace": "t-1"}
    with pytest.raises(TypeError, match="headers cannot be"):
        tasks.request_fields.apply_async(headers=["x"])


def test_parent_and_root_of_tasks_sent_by_tasks(tasks, worker):
    outer = tasks.spawn.delay().get(timeout=20)
    sent = tasks.app.AsyncResult(outer["sent"]).get(timeout=20)
    assert (sent["parent_id"], sent["root_id"]) == (outer["id"], outer["id"])
    eager = outer["eager"]
    assert (eager["parent_id"], eager["root_id"]) == (outer["id"], outer["id"])
    assert eager["delivery_info"] == {"is_eager": True, "exchange": None, "routing_key": None,
                                      "priority": None}  # as Celery's eager request
    chained = chain(tasks.add.s(1, 2), tasks.request_fields.si()).apply_async()
    last = chained.get(timeout=20)  # as Celery: the step before is the parent, and the root
    assert last["parent_id"] == last["root_id"] == chained.parent.id
    retried = tasks.retry_fields.delay()
    fields = retried.get(timeout=20)  # as Celery: the retry is sent by the run before it
    assert (fields["parent_id"], fields["root_id"]) == (retried.id, retried.id)
    assert fields["eta"] is not None and fields["timelimit"] == [30, None]


def test_group_members_know_their_group(tasks, worker):
    plain = group(tasks.request_fields.s() for _ in range(2)).apply_async()
    assert [f["group"] for f in plain.get(timeout=20)] == [plain.id] * 2
    timed = group(tasks.request_fields.s().set(priority=1) for _ in range(2)).apply_async()
    assert [f["group"] for f in timed.get(timeout=20)] == [timed.id] * 2


def test_a_redelivered_task_says_so(tasks, worker, tmp_path):
    info = tasks.die_once.delay(str(tmp_path / "marker")).get(timeout=30)
    assert info == {**DELIVERY, "redelivered": True}


# -- Signal itself, in-process ----------------------------------------------------------

def test_connect_in_each_of_celerys_forms():
    sig, calls = signals.Signal(name="probe"), []

    @sig.connect
    def plain(sender=None, **named):
        calls.append(("plain", sender, named))

    @sig.connect(sender="a")
    def only_a(sender=None, **named):
        calls.append(("only_a", sender))

    def strong(sender=None, **named):
        return "strong"

    assert sig.connect(strong, sender="b", weak=False, dispatch_uid="uid") is strong
    sig.connect(strong, sender="b", dispatch_uid="uid")  # the same key: connected once
    sig.connect(plain)
    assert len(sig.receivers) == 3
    assert sig.send("b", x=1) == [(plain, None), (strong, "strong")]
    assert calls == [("plain", "b", {"signal": sig, "x": 1})]
    sig.send("a")
    assert calls[-1] == ("only_a", "a") and sig.has_listeners("a")
    assert sig.disconnect(dispatch_uid="uid", sender="b") and not sig.disconnect(strong)
    assert sig.disconnect(only_a, sender="a") and sig.send("a") == [(plain, None)]
    with pytest.raises(ValueError, match="keyword arguments"):
        sig.connect(lambda sender: None)


def test_weak_receivers_go_with_their_function_and_strong_ones_stay():
    sig = signals.Signal()

    class Listener:
        def heard(self, **named):
            return "heard"

    listener = Listener()
    sig.connect(listener.heard)  # a bound method: held by a WeakMethod
    sig.connect(lambda **named: "kept", weak=False)
    sig.connect(lambda **named: "gone")
    gc.collect()
    assert [response for _, response in sig.send(None)] == ["heard", "kept"]
    del listener
    gc.collect()
    assert [response for _, response in sig.send(None)] == ["kept"]


def test_a_receiver_that_raises_is_logged_and_the_rest_still_hear(caplog):
    sig = signals.Signal(name="probe")
    error = RuntimeError("receiver bug")

    def bad(**named):
        raise error

    sig.connect(bad)
    sig.connect(lambda **named: "fine", weak=False)
    assert [response for _, response in sig.send(None)] == [error, "fine"]
    assert "receiver bug" in caplog.text


def test_retry_calls_the_receiver_until_it_returns(monkeypatch):
    sig, pauses, tries = signals.Signal(), [], []
    monkeypatch.setattr(signals.time, "sleep", pauses.append)

    def flaky(**named):
        tries.append(1)
        if len(tries) < 3:
            raise ConnectionError("not yet")
        return "done"

    wrapper = sig.connect(flaky, retry=True)
    assert wrapper is not flaky and [r for _, r in sig.send(None)] == ["done"]
    assert pauses == [2, 4]
    sig.connect(flaky, retry=True)  # the same function: connected once
    assert len(sig.receivers) == 1 and sig.disconnect(flaky)


def test_a_sender_is_matched_as_in_celery(tasks):
    sig, heard = signals.Signal(), []
    sig.connect(lambda sender, **named: heard.append(sender), sender=tasks.add, weak=False)
    sig.connect(lambda sender, **named: heard.append("by name"), sender="tests.signal_tasks.add",
                weak=False)
    sig.send(tasks.add)
    sig.send("tests.signal_tasks.add")
    sig.send(tasks.fail)
    assert heard == [tasks.add, "by name"]


def test_a_shared_task_sender_is_the_task_it_stands_for(tasks):
    saved, shared_before = miniq.app._default, list(miniq.project.SHARED)
    miniq.app._default = tasks.app
    try:
        @miniq.shared_task
        def shared(**named):
            return "shared"

        sig, heard = signals.Signal(), []
        sig.connect(lambda sender, **named: heard.append(sender), sender=shared, weak=False)
        sig.send(tasks.app.tasks[f"{__name__}.shared"])
        assert len(heard) == 1
    finally:
        tasks.app.tasks.pop(f"{__name__}.shared", None)
        miniq.app._default = saved
        miniq.project.SHARED[:] = shared_before  # apps made later do not get it


def eager_app(tmp_path):
    """An app of its own that runs its tasks eagerly; the default app stays."""
    saved = miniq.app._default
    app = Miniq("eager", broker=f"sqlite:///{tmp_path / 'eager.db'}", task_always_eager=True)
    miniq.app._default = saved
    return app


def test_eager_runs_send_the_task_signals_in_process(tasks, tmp_path):
    app, heard = eager_app(tmp_path), []

    @app.task
    def double(x):
        return 2 * x

    receiver = lambda signal, sender, **named: heard.append((signal.name, sender))  # noqa: E731
    for sig in (signals.task_prerun, signals.task_success, signals.task_postrun):
        sig.connect(receiver, sender=double, weak=False)
    assert double.delay(4).get() == 8
    assert heard == [("task_prerun", double), ("task_success", double), ("task_postrun", double)]


def test_an_eager_reject_sends_no_task_failure_as_celerys(tasks, tmp_path):
    """Celery's worker sends it for the message it rejects; an eager run has none."""
    app, heard = eager_app(tmp_path), []

    @app.task
    def refuse():
        raise Reject("no thanks", requeue=False)

    receiver = lambda signal, sender, **named: heard.append(signal.name)  # noqa: E731
    for sig in (signals.task_prerun, signals.task_failure, signals.task_postrun):
        sig.connect(receiver, sender=refuse, weak=False)
    assert refuse.delay().state == "REJECTED"
    assert heard == ["task_prerun", "task_postrun"]


@pytest.mark.parametrize("touch, loaded", [("", False), ("app.on_after_configure; ", True)])
def test_only_an_app_that_uses_signals_loads_them(tmp_path, touch, loaded):
    code = ("import sys; from miniq import Miniq, group; "
            f"app = Miniq('quiet', broker='sqlite:///{tmp_path / 'q.db'}'); "
            "add = app.task(name='add')(lambda x, y: x + y); add.delay(1, 2); "
            "group(add.s(1, 1), add.s(2, 2)).apply_async(); "
            f"{touch}print('miniq.signals' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=30)
    assert out.stdout.split() == [str(loaded)], out.stderr


@pytest.mark.parametrize("impl", ["miniq", "celery"])
def test_task_loggers_sit_under_celery_task_whose_names_are_reserved(impl):
    log = importlib.import_module(f"{impl}.utils.log") if impl == "miniq" else (
        pytest.importorskip("celery.utils.log"))
    assert log.get_task_logger("proj.tasks_of_a_test").parent.name == "celery.task"
    for reserved in ("celery", "celery.task"):
        with pytest.raises(RuntimeError, match="reserved"):
            log.get_task_logger(reserved)
