"""Workflows at scale and through a crash, on miniq only: a group and a chord of
1,000 members, a chain 100 steps deep, a chord body's errback run once however
many members fail, and a chord whose worker is killed (SIGKILL) while its members
run and its callback waits, then restarted: the callback runs exactly once.
The forms themselves, each with the result Celery gives, are in
tests/test_celery_compat.py, which runs them on Celery too."""
import json
import os
import signal

import pytest

from miniq import ChordError, chain, chord, group
from tests import tasks
from tests.conftest import module_worker, wait_for

T = 60  # seconds for any one workflow; each takes a few on a busy two-core machine


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    with module_worker(tmp_path_factory, "canvas-forms") as worker:
        yield worker


@pytest.fixture
def shared(worker, monkeypatch):
    """The tests' app, sending to the shared worker's database."""
    url, proc = worker
    assert proc.proc.poll() is None, proc.output()
    monkeypatch.setenv("MINIQ_BROKER_URL", url)
    monkeypatch.setitem(tasks.app.conf, "broker_url", url)
    yield tasks.app
    tasks.app.broker.close()


def settled(app):
    """True once no task is queued, running or waiting: nothing more will run."""
    return app.broker.db.execute("SELECT COUNT(*) FROM task WHERE status != 2").fetchone()[0] == 0


def lines(path):
    return open(path).read().splitlines() if os.path.exists(path) else []


def test_a_group_and_a_chord_of_a_thousand_members_complete(shared):
    members = group(tasks.add.s(i, i) for i in range(1000)).apply_async()
    assert members.get(timeout=T) == [2 * i for i in range(1000)]
    summed = chord([tasks.add.s(i, i) for i in range(1000)], tasks.tsum.s()).apply_async()
    assert summed.get(timeout=T) == 999000


def test_a_chain_a_hundred_steps_deep_completes(shared):
    result = chain(tasks.add.s(0, 1), *[tasks.add.s(1) for _ in range(99)]).apply_async()
    assert result.get(timeout=T) == 100
    first = result
    for _ in range(99):
        first = first.parent
    assert first.parent is None and first.get(timeout=T) == 1


def test_a_chord_body_errback_runs_once_however_many_members_fail(shared, tmp_path):
    log = str(tmp_path / "errback")
    body = tasks.tsum.s().on_error(tasks.errback_new.s(log))  # new-style: (request, exc, tb)
    result = chord([tasks.fail.s("one"), tasks.add.s(1, 1), tasks.fail.s("two")], body).delay()
    with pytest.raises((ValueError, ChordError)):  # which one: the compat module says
        result.get(timeout=T)
    wait_for(lambda: result.state == "FAILURE", timeout=T, message="the callback failed")
    wait_for(lambda: lines(log) and settled(shared), timeout=T, message="the errback run")
    assert len(lines(log)) == 1  # once, not per member
    assert json.loads(lines(log)[0])[:3] == [result.id, "tests.tasks.tsum", "ChordError"]


@pytest.mark.slow  # on 3.11 in CI; the other Pythons skip it for time
def test_a_chord_survives_a_worker_killed_mid_chord_and_runs_its_callback_once(
        app, start_worker, tmp_path):
    gate, log = str(tmp_path / "gate"), str(tmp_path / "callback")
    header = [tasks.add.s(1, 1), tasks.wait_for_gate.s(gate, 1), tasks.wait_for_gate.s(gate, 2)]
    result = chord(header, tasks.record.si(log, "callback")).apply_async()
    worker = start_worker("-c", "3")
    wait_for(lambda: all(os.path.exists(f"{gate}.running.{n}") for n in (1, 2)), timeout=T,
             message="both gated members running")
    assert result.state == "PENDING" and not lines(log)  # the callback waits for them
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(10)
    open(gate, "w").close()  # the members run again after the restart, and finish at once
    start_worker("-c", "2")
    assert result.get(timeout=T) == "callback"
    wait_for(lambda: settled(app), timeout=T, message="every task settled")
    assert [line.split()[0] for line in lines(log)] == ["callback"]  # exactly once
