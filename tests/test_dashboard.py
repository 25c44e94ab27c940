"""The dashboard's JSON API against a real worker and a real ``miniq dashboard``
process on the same file: what it shows, what it does, and what it refuses.
One worker and one dashboard serve the whole module."""
import importlib.resources
import json
import re
import time
import urllib.error
import urllib.request

import pytest

from tests import tasks
from tests.conftest import app_on, module_worker, run_cli, start_dashboard, wait_for

T = 20  # seconds for any one wait
SCHEDULE = {"beat_schedule": {"tick": {"task": "tests.tasks.add", "schedule": 60.0,
                                       "args": [1, 2]}}}


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    with module_worker(tmp_path_factory, "dashboard", "-Q", "celery,counted") as worker:
        yield worker


@pytest.fixture(scope="module")
def dashboard(worker, tmp_path_factory):
    """The base URL of a dashboard on the worker's database."""
    log = tmp_path_factory.mktemp("dashboard-log") / "dashboard.log"
    proc, url = start_dashboard(worker[0], log, env={"MINIQ_TEST_CONF": json.dumps(SCHEDULE)})
    yield url
    proc.stop()


@pytest.fixture
def app(worker, monkeypatch):
    yield from app_on(worker, monkeypatch)


def call(url, method="GET", headers=None):
    """(status, decoded JSON or text) of one request."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=T) as response:
            status, body = response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read().decode()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def get(dashboard, path):
    status, body = call(dashboard + path)
    assert status == 200, body
    return body


def token(dashboard):
    return re.search(r'const TOKEN = "([^"]+)"', get(dashboard, ""))[1]


def post(dashboard, path, **headers):
    """An action as the page sends it: POST with the page's token."""
    return call(dashboard + path, "POST", {"X-Miniq-Token": token(dashboard), **headers})


def state_is(dashboard, task_id, *states):
    """The task's API answer once its state is one of states."""
    def seen():
        answer = get(dashboard, f"api/task/{task_id}")
        return answer if answer["state"] in states else None
    return wait_for(seen, T, 0.05, f"task {task_id} in {states}")


def test_the_overview_shows_the_worker_its_queues_and_the_last_hour(app, worker, dashboard):
    later = tasks.add.apply_async((1, 2), queue="counted", countdown=600)
    tasks.add.apply_async((1, 2), queue="counted").get(timeout=T)
    with pytest.raises(ValueError):
        tasks.fail.apply_async(queue="counted").get(timeout=T)
    running = tasks.sleep.apply_async((30,), queue="counted")
    state_is(dashboard, running.id, "STARTED")
    answer = get(dashboard, "api/overview")
    (me,) = answer["workers"]
    assert (me["pid"], me["concurrency"], me["queues"]) == (worker[1].pid, 2, ["celery", "counted"])
    assert 0 <= me["heartbeat"] < 5
    (busy,) = [t for t in me["running"] if t["id"] == running.id]
    assert busy["name"] == "tests.tasks.sleep" and 0 <= busy["runtime"] < T
    counted = answer["queues"]["counted"]
    assert counted == {"queued": 0, "scheduled": 1, "running": 1, "succeeded": 1, "failed": 1,
                       "other": 0}
    assert answer["queues"]["celery"]["scheduled"] == 0  # a queue a worker serves shows, idle
    minutes = answer["throughput"]
    assert len(minutes) == 60 and minutes[-1]["minute"] <= answer["now"] < minutes[-1]["minute"] + 60
    assert sum(m["succeeded"] for m in minutes) >= 1 and sum(m["failed"] for m in minutes) >= 1
    app.control.revoke([running.id, later.id], terminate=True)
    state_is(dashboard, running.id, "REVOKED")
    counted = get(dashboard, "api/overview")["queues"]["counted"]  # the kept minutes, and new ones
    assert (counted["scheduled"], counted["running"], counted["other"]) == (0, 0, 2)
    assert (counted["succeeded"], counted["failed"]) == (1, 1)


def test_a_task_a_worker_holds_ahead_is_counted_neither_queued_nor_running(app, dashboard):
    """As Celery's queue lengths leave out what workers have prefetched, and its active()
    what no child runs yet."""
    busy = [tasks.sleep.apply_async((30,), queue="counted") for _ in range(2)]
    for result in busy:
        state_is(dashboard, result.id, "STARTED")
    ahead = tasks.add.apply_async((1, 1), queue="counted")
    wait_for(lambda: app.broker.task(ahead.id)["status"] == 1, message="the task held ahead")
    counted = get(dashboard, "api/overview")["queues"]["counted"]
    assert (counted["queued"], counted["running"]) == (0, 2)
    app.control.revoke([result.id for result in busy], terminate=True)
    assert ahead.get(timeout=T) == 2


def test_the_task_list_filters_pages_and_searches(app, dashboard):
    sent = [tasks.echo.apply_async((f"listed {i}",), queue="celery") for i in range(3)]
    for result in sent:
        result.get(timeout=T)
    newest = get(dashboard, "api/tasks?name=tests.tasks.echo&limit=2")
    assert [t["id"] for t in newest] == [sent[2].id, sent[1].id]
    older = get(dashboard, "api/tasks?name=tests.tasks.echo&limit=2&offset=2")
    assert [t["id"] for t in older] == [sent[0].id]
    row = older[0]
    assert (row["state"], row["queue"], row["args"]) == ("SUCCESS", "celery", '["listed 0"]')
    assert row["received"] <= row["started"] <= row["finished"]
    assert row["worker"].startswith("celery@")
    found = get(dashboard, f"api/tasks?search={sent[1].id[:13]}")
    assert [t["id"] for t in found] == [sent[1].id]
    assert get(dashboard, "api/tasks?name=tests.tasks.echo&state=FAILURE") == []
    assert get(dashboard, "api/tasks?name=tests.tasks.echo&queue=counted") == []
    long = tasks.echo.apply_async(("x" * 500,), countdown=600)
    (shown,) = get(dashboard, f"api/tasks?search={long.id}")
    assert shown["state"] == "PENDING" and len(shown["args"]) == 120 and shown["args"][-1] == "…"
    assert call(dashboard + "api/tasks?limit=many")[0] == 400
    assert len(get(dashboard, "api/tasks?limit=-1")) == 1  # not the whole table
    odd = tasks.echo.apply_async((float("nan"),), countdown=600)
    assert get(dashboard, f"api/task/{odd.id}")["args"] == ["NaN"]  # JSON a browser reads


def test_a_senders_argsrepr_is_what_others_see_of_its_arguments(app, dashboard, tmp_path):
    """As Celery's argsrepr and kwargsrepr: what the publish signal's headers, inspect
    (safe) and the dashboard show, the real arguments for the task alone."""
    from miniq import signals
    seen, gate = [], str(tmp_path / "gate")

    def publishing(headers=None, **_):
        seen.append((headers["argsrepr"], headers["kwargsrepr"]))
    signals.before_task_publish.connect(publishing)
    try:
        running = tasks.wait_for_gate.apply_async((gate,), {"value": "secret"},
                                                  argsrepr="(<gate>,)", kwargsrepr="{<hidden>}")
    finally:
        signals.before_task_publish.disconnect(publishing)
    assert seen == [("(<gate>,)", "{<hidden>}")]
    shown = state_is(dashboard, running.id, "STARTED")
    assert (shown["args"], shown["kwargs"]) == ("(<gate>,)", "{<hidden>}")
    listed = get(dashboard, f"api/tasks?search={running.id}")
    assert [row["args"] for row in listed] == ["(<gate>,)"]
    [(info,)] = app.control.inspect().active(safe=True).values()
    assert (info["args"], info["kwargs"]) == ("(<gate>,)", "{<hidden>}")
    [(info,)] = app.control.inspect().active().values()  # as Celery's: unsafe, as they are
    assert (info["args"], info["kwargs"]) == ([gate], {"value": "secret"})
    open(gate, "w").close()
    assert running.get(timeout=T) == "secret"


@pytest.mark.slow  # on 3.11 in CI; the other Pythons skip it for time
def test_one_task_shows_its_failure_progress_and_retries(app, dashboard):
    failed = tasks.fail.delay("it broke")
    answer = state_is(dashboard, failed.id, "FAILURE")
    assert answer["result"]["exc_type"] == "ValueError"
    assert answer["result"]["exc_message"] == ["it broke"]
    assert "raise ValueError(message)" in answer["traceback"]
    assert (answer["args"], answer["kwargs"], answer["children"]) == (["it broke"], {}, [])
    assert answer["attempts"] == 1 and answer["worker"].startswith("celery@")
    moving = tasks.progress.delay(60, 0.05)
    seen = state_is(dashboard, moving.id, "PROGRESS")["result"]
    assert seen["total"] == 60 and 0 <= seen["current"] < 60
    wait_for(lambda: get(dashboard, f"api/task/{moving.id}")["result"]["current"] > seen["current"],
             T, 0.05, "progress moves on")
    assert state_is(dashboard, moving.id, "SUCCESS")["result"] == {"id": moving.id, "done": 60}
    retried = tasks.retry_twice.delay(0.05)
    answer = state_is(dashboard, retried.id, "SUCCESS")
    assert (answer["result"], answer["retries"], answer["attempts"]) == (2, 2, 1)
    assert call(dashboard + "api/task/no-such-task") == (404, {"error": "no task no-such-task"})


def test_the_schedule_shows_last_and_next_runs(app, dashboard):
    (tick,) = get(dashboard, "api/schedule")
    assert (tick["name"], tick["task"], tick["last"]) == ("tick", "tests.tasks.add", None)
    assert time.time() < tick["next"] <= time.time() + 60
    slot = tick["next"] - 60
    assert not app.broker.claim_beat_slot("tick", slot)  # new to the file: seen, not sent
    assert get(dashboard, "api/schedule")[0]["last"] is None
    assert app.broker.claim_beat_slot("tick", slot + 60)  # as a beat does when it sends a run
    assert get(dashboard, "api/schedule")[0]["last"] == slot + 60


def test_revoke_terminates_a_running_task(app, dashboard):
    running = tasks.sleep.delay(60)
    state_is(dashboard, running.id, "STARTED")
    assert post(dashboard, f"api/revoke/{running.id}?terminate=true") == (
        200, {"revoked": running.id, "terminate": True})
    state_is(dashboard, running.id, "REVOKED")


def test_retry_sends_a_failed_or_revoked_task_again(app, dashboard):
    failed = tasks.fail.apply_async(("again",), queue="counted")
    state_is(dashboard, failed.id, "FAILURE")
    status, answer = post(dashboard, f"api/retry/{failed.id}")
    assert status == 200 and answer["retry_of"] == failed.id and answer["id"] != failed.id
    again = state_is(dashboard, answer["id"], "FAILURE")
    assert (again["args"], again["queue"]) == (["again"], "counted")
    later = tasks.add.apply_async((2, 3), countdown=600)
    assert post(dashboard, f"api/revoke/{later.id}")[0] == 200
    state_is(dashboard, later.id, "REVOKED")
    status, answer = post(dashboard, f"api/retry/{later.id}")
    assert status == 200 and app.AsyncResult(answer["id"]).get(timeout=T) == 5
    assert post(dashboard, f"api/retry/{answer['id']}") == (
        400, {"error": "only a failed or revoked task can be sent again"})


def test_purge_empties_one_queue(app, dashboard):
    for _ in range(3):
        tasks.add.apply_async((1, 1), queue="nobody")  # no worker serves it
    kept = tasks.add.apply_async((1, 1), queue="counted", countdown=600)
    assert get(dashboard, "api/overview")["queues"]["nobody"]["queued"] == 3
    assert post(dashboard, "api/purge/nobody") == (200, {"purged": 3})
    assert "nobody" not in get(dashboard, "api/overview")["queues"]
    assert get(dashboard, f"api/task/{kept.id}")["state"] == "PENDING"
    app.control.revoke(kept.id)


def test_actions_need_a_post_with_the_pages_token(app, dashboard):
    later = tasks.add.apply_async((1, 1), countdown=600)
    action = f"{dashboard}api/revoke/{later.id}"
    assert call(action)[0] == 405  # GET never changes anything
    assert call(dashboard + "api/tasks", "POST", {"X-Miniq-Token": token(dashboard)})[0] == 405
    assert call(dashboard + "api/nothing")[0] == 404
    assert call(action, "POST")[0] == 403
    assert call(action, "POST", {"X-Miniq-Token": "guessed"})[0] == 403
    assert post(dashboard, f"api/revoke/{later.id}", Origin="http://elsewhere.example")[0] == 403
    assert call(dashboard + "api/overview", headers={"Host": "attacker.example"})[0] == 403
    assert get(dashboard, f"api/task/{later.id}")["state"] == "PENDING"  # all refused
    assert post(dashboard, f"api/revoke/{later.id}", Origin=dashboard.rstrip("/"))[0] == 200


def test_basic_auth_guards_everything(worker, tmp_path):
    proc, url = start_dashboard(worker[0], tmp_path / "auth.log", env={
        "MINIQ_DASHBOARD_AUTH": "ann:s3cret"})
    try:
        login = {"Authorization": "Basic YW5uOnMzY3JldA=="}  # ann:s3cret
        for path in ("", "api/overview", "api/tasks"):
            status, _ = call(url + path)
            assert status == 401
        assert call(url + "api/overview", headers={"Authorization": "Basic YW5uOndyb25n"})[0] == 401
        assert call(url + "api/overview", headers=login)[0] == 200
        assert call(url + "api/purge/x", "POST", login)[0] == 403  # and still the token
    finally:
        proc.stop()


def test_listening_beyond_this_machine_needs_a_login(broker_url):
    refused = run_cli("-A", "tests.tasks", "dashboard", "--address", "0.0.0.0", "--port", "0")
    assert refused.returncode == 2 and refused.stdout == ""
    (line,) = refused.stderr.splitlines()
    assert line.startswith("miniq: error: ") and "--basic-auth" in line


@pytest.mark.parametrize("options, said", [
    (("--address", "0.0.0.0", "--basic-auth", ":"), "neither empty"),
    (("--basic-auth", "ann:"), "neither empty"),
    (("--port", "70000"), "0 to 65535"), (("--port", "-1"), "0 to 65535")])
def test_a_login_or_port_that_cannot_be_is_refused(broker_url, options, said):
    refused = run_cli("-A", "tests.tasks", "dashboard", *options)
    assert refused.returncode == 2 and refused.stdout == "" and "Traceback" not in refused.stderr
    assert said in refused.stderr.splitlines()[-1], refused.stderr


def test_an_empty_login_setting_is_no_login_on_this_machine(broker_url, tmp_path):
    proc, base = start_dashboard(broker_url, tmp_path / "dash.log",
                                 env={"MINIQ_DASHBOARD_AUTH": ""})
    try:
        assert call(base + "api/overview")[0] == 200
    finally:
        proc.stop()


def test_the_page_ships_in_the_package_and_never_writes_html_from_data():
    page = importlib.resources.files("miniq").joinpath("dashboard.html").read_text("utf-8")
    assert 'const TOKEN = "{{token}}"' in page and '<script nonce="{{token}}">' in page
    assert "innerHTML" not in page and "outerHTML" not in page and "insertAdjacentHTML" not in page
