"""The Celery user's toolbox (issue 5): periodic tasks, workflows, queues and
priority, and the inspection commands, against real workers."""
import contextlib
import importlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

import miniq.app
from miniq import ChordError, chain, chord, exceptions, group
from miniq.beat import Beat
from miniq.exceptions import ImproperlyConfigured
from miniq.schedules import crontab, schedule
from tests import tasks
from tests.conftest import ROOT, run_cli, wait_for

ZoneInfo = pytest.importorskip("zoneinfo").ZoneInfo
BERLIN, LONDON, NEW_YORK = map(ZoneInfo, ("Europe/Berlin", "Europe/London", "America/New_York"))


def at(*fields, tz=timezone.utc):
    return datetime(*fields, tzinfo=tz).timestamp()


# schedules -------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, now, expected", [
    (dict(minute="*/15"), at(2026, 11, 25, 10, 7), at(2026, 11, 25, 10, 15)),
    (dict(minute=0, hour=9, day_of_week="mon-fri"), at(2026, 11, 27, 10), at(2026, 11, 30, 9)),
    (dict(minute=0, hour=0, day_of_month=1), at(2026, 2, 28, 12), at(2026, 3, 1)),
    (dict(minute="0-10/5", hour="1,3"), at(2026, 1, 1, 1, 10), at(2026, 1, 1, 3, 0)),
    (dict(minute=0, hour=0, month_of_year="feb", day_of_week="sun"), at(2026, 1, 1), at(2026, 2, 1)),
])
def test_crontab_next_run(spec, now, expected):
    assert crontab(**spec).next_after(now, timezone.utc) == expected


def test_crontab_across_a_dst_change_runs_once_per_day():
    daily = crontab(minute=30, hour=2)  # 02:30 does not exist in Berlin on 2026-03-29
    first = daily.next_after(at(2026, 3, 28, 12, tz=BERLIN), BERLIN)
    assert first == at(2026, 3, 29, 3, 30, tz=BERLIN)  # as Celery's: the offset before
    assert daily.last_at_or_before(at(2026, 3, 29, 4, tz=BERLIN), BERLIN) == first
    assert daily.next_after(first, BERLIN) == at(2026, 3, 30, 2, 30, tz=BERLIN)


def test_of_the_times_a_dst_change_skips_the_first_runs():
    """As Celery's: the quarters of New York's skipped 02:00 hour are one run, at 03:00;
    London's skipped 01:00 runs at 02:00; looking back as well."""
    quarters, hourly = crontab(minute="*/15", hour=2), crontab(hour=1)
    first = quarters.next_after(at(2025, 3, 9, 1, 50, tz=NEW_YORK), NEW_YORK)
    assert first == at(2025, 3, 9, 3, tz=NEW_YORK)
    assert quarters.next_after(first, NEW_YORK) == at(2025, 3, 10, 2, tz=NEW_YORK)
    assert quarters.last_at_or_before(at(2025, 3, 9, 3, 50, tz=NEW_YORK), NEW_YORK) == first
    first = hourly.next_after(at(2025, 3, 30, 0, 59, tz=LONDON), LONDON)
    assert first == at(2025, 3, 30, 2, tz=LONDON)
    assert hourly.next_after(first, LONDON) == at(2025, 3, 31, 1, tz=LONDON)


def test_beat_runs_crontabs_in_djangos_time_zone_where_no_timezone_is_set(app, monkeypatch):
    monkeypatch.setitem(app.conf, "timezone", None)
    monkeypatch.setitem(app.conf, "TIME_ZONE", "America/New_York")
    assert beat_on(app, monkeypatch, [0.0], {}).tz == NEW_YORK


def test_a_crontab_whose_next_run_is_decades_away_finds_it():
    leap_tuesday = crontab(0, 0, day_of_week="tue", day_of_month=29, month_of_year=2)
    assert leap_tuesday.next_after(at(2028, 3, 1), timezone.utc) == at(2056, 2, 29)


@pytest.mark.parametrize("spec, message", [(dict(minute=61), "out of range 0-59"),
                                           (dict(day_of_week="funday"), "cannot read")])
def test_crontab_rejects_bad_fields_clearly(spec, message):
    with pytest.raises(ValueError, match=message):
        crontab(**spec)


@pytest.fixture(params=["miniq", "celery"])
def schedules(request):
    """Each implementation's schedules module: the same checks hold on Celery's."""
    if request.param == "celery":
        return pytest.importorskip("celery.schedules")
    return importlib.import_module("miniq.schedules")


@pytest.mark.parametrize("spec, field, expected", [
    (dict(day_of_week="fri-mon,wed"), "day_of_week", {0, 1, 3, 5, 6}),  # ranges wrap
    (dict(hour="22-2,12"), "hour", {0, 1, 2, 12, 22, 23}),
    (dict(minute="50-10/5"), "minute", {50, 55, 0, 5, 10}),
    (dict(month_of_year="nov-feb"), "month_of_year", {11, 12, 1, 2}),
    (dict(day_of_month="31-2"), "day_of_month", {31, 1, 2}),
    (dict(day_of_week="monday,Fri"), "day_of_week", {1, 5}),
    (dict(minute="*/20", hour=[1, 3, 4]), "hour", {1, 3, 4}),
    (dict(minute=" 1, 2 "), "minute", {1, 2})])
def test_crontab_fields_read_as_celerys(schedules, spec, field, expected):
    assert getattr(schedules.crontab(**spec), field) == expected


@pytest.mark.parametrize("spec", [dict(minute="5/15"), dict(day_of_week="7"),
                                  dict(hour="*/0"), dict(minute="1 2")])
def test_crontab_refuses_what_celerys_refuses(schedules, spec):
    with pytest.raises(ValueError):
        schedules.crontab(**spec)


def test_schedules_compare_and_show_as_celerys(schedules):
    crontab, every = schedules.crontab, schedules.schedule
    assert crontab(minute=0, hour=9) == crontab(minute="0", hour="9") != crontab(minute=1)
    assert every(10) == every(timedelta(seconds=10)) != every(11)
    assert repr(crontab(minute="*/15", day_of_week="mon-fri")) == (
        "<crontab: */15 * * * mon-fri (m/h/dM/MY/d)>")
    assert (repr(every(10)), repr(every(90)), repr(every(3600))) == (
        "<freq: 10.00 seconds>", "<freq: 1.50 minutes>", "<freq: 1.00 hour>")
    with pytest.raises(TypeError):
        hash(crontab())


def test_add_periodic_task_puts_its_args_first_as_partials_do(app):
    app.add_periodic_task(4.0, tasks.add.s(1), args=(2,), name="partial")
    app.add_periodic_task(4.0, tasks.add.si(1, 1), args=(2,), name="immutable")
    app.add_periodic_task(4.0, tasks.add, args=(3, 4), name="a task")  # as Celery: by its name
    assert [app.conf.beat_schedule[key]["args"] for key in ("partial", "immutable", "a task")] == [
        (2, 1), (1, 1), (3, 4)]
    assert app.conf.beat_schedule["a task"]["task"] == "tests.tasks.add"


def test_interval_slots_agree_across_processes():
    every = schedule(timedelta(seconds=30))
    assert every.next_after(95.0) == 120.0 and every.last_at_or_before(95.0) == 90.0


# beat -------------------------------------------------------------------------------------------

class NeverDue(crontab):
    """A Celery-style schedule: its own is_due would decide when it runs."""

    def is_due(self, last_run_at):
        return False, 60.0


def beat_on(app, monkeypatch, clock, entries):
    monkeypatch.setitem(app.conf, "beat_schedule", entries)
    return Beat(app, clock=lambda: clock[0])


def test_two_beats_send_each_run_once_and_a_missed_run_once(app, monkeypatch):
    clock = [1000.0]
    entry = {"every10": {"task": "tests.tasks.add", "schedule": 10.0, "args": (1, 2),
                         "options": {"queue": "beat"}}}
    first, second = beat_on(app, monkeypatch, clock, entry), beat_on(app, monkeypatch, clock, entry)
    for _ in range(3):  # new to the file: the first run is the next one, as Celery's
        first.tick(), second.tick()
        clock[0] += 10
    clock[0] += 1000  # nothing ran for 100 periods: one run on start, not a hundred
    assert beat_on(app, monkeypatch, clock, entry).tick() == pytest.approx(10.0)
    rows = app.broker.db.execute("SELECT name, queue, body FROM task").fetchall()
    assert rows == [("tests.tasks.add", "beat", "[[1,2],{}]")] * 3


def test_a_crontab_entry_new_to_the_file_waits_for_its_next_time(app, monkeypatch):
    """A first start at 04:00 sends nothing for a 09:00 crontab (yesterday's run was never
    missed); a start after a stop over 09:00 sends the missed run once."""
    clock = [datetime(2026, 11, 27, 4, tzinfo=timezone.utc).timestamp()]
    entry = {"report": {"task": "tests.tasks.add", "schedule": crontab(0, 9), "args": (1, 2)}}
    until = beat_on(app, monkeypatch, clock, entry).tick()
    assert until == pytest.approx(5 * 3600)  # today at 09:00
    sent = app.broker.db.execute("SELECT COUNT(*) FROM task")
    assert sent.fetchone() == (0,)
    clock[0] += 2 * 86400  # stopped, then started again two days later at 04:00
    beat_on(app, monkeypatch, clock, entry).tick()
    assert app.broker.db.execute("SELECT COUNT(*) FROM task").fetchone() == (1,)


def test_an_entry_taken_out_then_put_back_is_new_again_as_celerys(app, monkeypatch):
    """Celery's beat drops an entry its schedule no longer has: put back, its first run
    is its next, not the one missed while it was out."""
    clock = [datetime(2026, 11, 27, 8, tzinfo=timezone.utc).timestamp()]
    report = {"task": "tests.tasks.add", "schedule": crontab(0, 9), "args": (1, 2)}
    other = {"other": {"task": "tests.tasks.add", "schedule": crontab(0, 10), "args": (3, 4)}}
    beat_on(app, monkeypatch, clock, {"report": report, **other}).tick()
    clock[0] += 86400  # 08:00 the next day: run without it over 09:00, then with it again
    beat_on(app, monkeypatch, clock, other).tick()
    clock[0] += 2 * 3600
    beat_on(app, monkeypatch, clock, {"report": report, **other}).tick()
    sent = app.broker.db.execute("SELECT body FROM task").fetchall()
    assert sent == [("[[3,4],{}]",)] * 2  # other's two 10:00 runs; report's 09:00 not sent
    if hasattr(app.broker.db, "setlimit"):  # 3.11 on: SQLite's limit before 3.32, on
        app.broker.db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)  # this connection
    many = {f"e{i}": other["other"] for i in range(1000)}  # more than an IN list may hold
    beat_on(app, monkeypatch, clock, many).tick()
    assert app.broker.db.execute("SELECT COUNT(DISTINCT entry) FROM beat").fetchone() == (1000,)


def test_celerys_schedule_forms_beat_reads(app):
    assert crontab.from_string("*/15 9-17 1 * mon-fri") == crontab(
        minute="*/15", hour="9-17", day_of_month="1", day_of_week="mon-fri")
    with pytest.raises(ValueError, match="Invalid crontab string"):
        crontab.from_string("* * *")
    assert schedule(30, relative=True) == schedule(30)  # as miniq's intervals always are
    with pytest.raises(TypeError, match="relative=False"):
        schedule(30, relative=False)


def test_a_changed_schedule_runs_next_after_its_last_run_as_celerys(app, monkeypatch):
    """As Celery's beat keeps an entry's last run when its schedule changes: a restart
    with a new time already past today sends nothing if the entry last ran (or was first
    seen) after it; it does if the entry last ran before it."""
    clock = [datetime(2026, 11, 27, 14, 47, tzinfo=timezone.utc).timestamp()]
    at_two = {"e": {"task": "tests.tasks.add", "schedule": crontab(0, 2), "args": (1, 2)}}
    at_two_pm = {"e": dict(at_two["e"], schedule=crontab(0, 14))}
    beat_on(app, monkeypatch, clock, at_two).tick()  # first seen at 14:47: nothing due
    clock[0] += 3
    assert beat_on(app, monkeypatch, clock, at_two_pm).tick() == pytest.approx(86400 - 2823)
    assert app.broker.db.execute("SELECT COUNT(*) FROM task").fetchone() == (0,)
    clock[0] += 86400 - 2823  # 14:00 the next day
    beat_on(app, monkeypatch, clock, at_two_pm).tick()
    clock[0] += 13 * 3600  # 03:00 the day after: 02:00 ran, then back to 14:00 at 14:30
    beat_on(app, monkeypatch, clock, at_two).tick()
    clock[0] += 11.5 * 3600
    beat_on(app, monkeypatch, clock, at_two_pm).tick()
    assert app.broker.db.execute("SELECT COUNT(*) FROM task").fetchone() == (3,)


def test_a_crontab_run_missed_by_more_than_the_starting_deadline_is_skipped(app, monkeypatch):
    """As Celery's beat_cron_starting_deadline: a run missed while beat was down is sent
    only within that many seconds of its time; a run on time is, and carries Celery's
    celery_beat_task header."""
    clock = [datetime(2026, 11, 27, 8, tzinfo=timezone.utc).timestamp()]
    monkeypatch.setitem(app.conf, "beat_cron_starting_deadline", 600)
    entry = {"report": {"task": "tests.tasks.add", "schedule": crontab(0, 9), "args": (1, 2),
                        "options": {"headers": {"own": 1}}}}
    beat_on(app, monkeypatch, clock, entry).tick()  # new to the file
    clock[0] += 3600 + 300  # down over 09:00: back at 09:05, within the deadline
    beat_on(app, monkeypatch, clock, entry).tick()
    clock[0] += 86400 + 1200  # down over the next 09:00, back at 09:25: too late
    beat_on(app, monkeypatch, clock, entry).tick()
    options = [json.loads(o) for o, in app.broker.db.execute("SELECT options FROM task")]
    assert [o["headers"] for o in options] == [{"own": 1, "celery_beat_task": True}]
    sent = datetime(2026, 11, 27, 9, tzinfo=timezone.utc).timestamp()
    assert app.broker.beat_runs() == {"report": sent}  # the skipped run is not shown as sent
    monkeypatch.setitem(app.conf, "beat_cron_starting_deadline", "600")
    with pytest.raises(ImproperlyConfigured, match="beat_cron_starting_deadline must be"):
        beat_on(app, monkeypatch, clock, entry)


@pytest.mark.parametrize("entry, said", [
    ({"task": "tests.tasks.add", "schedule": 10, "args": 5}, "args"),
    ({"task": "tests.tasks.add", "schedule": 10, "kwargs": [1]}, "keyword arguments"),
    ({"task": "tests.tasks.echo", "schedule": 10, "args": [{1}]}, "JSON"),
    ({"task": "tests.tasks.add", "schedule": "every minute"}, "crontab, not 'every minute'"),
    ({"task": "tests.tasks.add", "schedule": float("nan")}, "positive"),
    ({"task": "tests.tasks.add", "schedule": 10, "options": {"queue": 5}}, "queue"),
    ({"task": "tests.tasks.add", "schedule": 10, "options": {"serializer": "pickle"}}, "JSON"),
    ({"schedule": 10}, "no 'task'"),
    ({"task": "tests.tasks.add", "schedule": 10, "kwarg": {"y": 1}}, "'kwarg': an entry takes"),
    ({"task": "tests.tasks.add", "schedule": 10, "relative": False}, "relative=False: miniq"),
    ({"task": "tests.tasks.add", "schedule": crontab(0, 0, day_of_month=31, month_of_year=2)},
     "no run in the next thirty years"),
    ({"task": "tests.tasks.add", "schedule": NeverDue()}, "has is_due: miniq's beat asks"),
    ({"task": "tests.tasks.add", "schedule": 10, "args": (1, 2, 3)}, "too many positional")])
def test_a_bad_beat_entry_is_refused_as_beat_starts_naming_it(app, monkeypatch, entry, said):
    with pytest.raises(ImproperlyConfigured, match="entry 'bad'") as caught:
        beat_on(app, monkeypatch, [0.0], {"fine": {"task": "tests.tasks.add", "schedule": 5,
                                                   "args": (1, 2), "options": None,
                                                   "relative": True},
                                          "bad": entry})
    assert said in str(caught.value)


def test_a_crontab_of_celery_s_own_is_refused_naming_miniq_s(app, monkeypatch):
    """A settings file that still imports Celery's crontab (the import swap misses it)."""
    celery_crontab = pytest.importorskip("celery.schedules").crontab
    with pytest.raises(ImproperlyConfigured, match="is Celery's <crontab.*miniq.schedules'"):
        beat_on(app, monkeypatch, [0.0], {"bad": {"task": "tests.tasks.add",
                                                  "schedule": celery_crontab(minute="*/5")}})


@pytest.mark.parametrize("command", [["worker", "-c", "1", "-B"], ["beat"]])
def test_worker_b_and_beat_refuse_a_bad_entry_in_one_line(broker_url, command):
    conf = json.dumps({"beat_schedule": {"bad": {"task": "tests.tasks.add", "schedule": 5,
                                                 "args": 5}}})
    done = run_cli("-A", "tests.tasks", *command,
                   env={"MINIQ_BROKER_URL": broker_url, "MINIQ_TEST_CONF": conf})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("miniq: error: beat_schedule entry 'bad': ")


def test_beat_takes_the_options_of_celerys_beat_service(broker_url, tmp_path):
    """As the unit file of Celery's guide starts beat: --pidfile and --logfile hold, -s
    and --max-interval are taken (runs are kept in the database file); -S is refused
    unless it names Celery's default scheduler."""
    pidfile, logfile = tmp_path / "beat.pid", tmp_path / "beat.log"
    conf = json.dumps({"beat_schedule": {"tick": {"task": "tests.tasks.add", "schedule": 60,
                                                  "args": [1, 2]}}})
    env = dict(os.environ, MINIQ_BROKER_URL=broker_url, MINIQ_TEST_CONF=conf,
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "miniq", "-A", "tests.tasks", "beat",
                             "--pidfile", str(pidfile), "-f", str(logfile), "-l", "INFO",
                             "--max-interval", "5", "-s", str(tmp_path / "celerybeat-schedule"),
                             "-S", "celery.beat:PersistentScheduler"], env=env, cwd=ROOT,
                            start_new_session=True, stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: logfile.exists() and "beat: 1 entry" in logfile.read_text()
                 or proc.poll() is not None, message="beat's first line in its log file")
        assert pidfile.read_text() == f"{proc.pid}\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0 and not pidfile.exists()
        assert "  entries:     1\n" in proc.stdout.read()  # as Celery's, a banner at any level
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
    refused = run_cli("-A", "tests.tasks", "beat", "-S", "django_celery_beat.schedulers:"
                      "DatabaseScheduler", env={"MINIQ_BROKER_URL": broker_url})
    assert refused.returncode == 2 and "beat_scheduler='django_celery_beat" in refused.stderr


def test_beat_sends_by_the_tasks_apply_async_and_a_failed_send_stays_with_its_run(
        tmp_path, monkeypatch, caplog):
    """As Celery's beat: a task's own apply_async sends it (an override runs), a name it
    lacks goes by send_task; a send that fails is logged, and the others go out."""
    saved = miniq.app._default
    own = miniq.Miniq("beats", broker=f"sqlite:///{tmp_path / 'beat.db'}")
    try:
        class Routed(own.Task):
            def apply_async(self, args=None, kwargs=None, **options):
                if args == ["boom"]:
                    raise RuntimeError("no lock")
                return super().apply_async(args, kwargs, queue="forced", **options)

        @own.task(name="routed", base=Routed)
        def routed(x):
            return x
        entries = {"forced": {"task": "routed", "schedule": 10, "args": ["a"]},
                   "failing": {"task": "routed", "schedule": 10, "args": ["boom"]},
                   "by_name": {"task": "elsewhere.task", "schedule": 10}}
        for name in entries:  # entries the file has seen: each is due now
            own.broker.claim_beat_slot(name, 990.0)
        assert beat_on(own, monkeypatch, [1000.0], entries).tick() == 10.0
        assert own.broker.db.execute("SELECT name, queue, body FROM task ORDER BY seq"
                                     ).fetchall() == [("routed", "forced", '[["a"],{}]'),
                                                      ("elsewhere.task", "celery", "[[],{}]")]
        assert "sending failing (routed) failed: no lock" in caplog.text
    finally:
        miniq.app._default = saved


def test_beat_outlives_a_database_error_and_sends_the_run_after_it(app, monkeypatch, caplog):
    beat = beat_on(app, monkeypatch, [1000.0], {"each": {"task": "tests.tasks.add",
                                                        "schedule": 10, "args": [1, 2]}})
    app.broker.claim_beat_slot("each", 900.0)  # an entry this file has sent before
    claim, pauses = app.broker.claim_beat_slot, []

    def locked_once(*args, **kwargs):
        if not pauses:
            raise exceptions.OperationalError("database is locked")
        return claim(*args, **kwargs)

    def sleep(seconds):
        pauses.append(seconds)
        if len(pauses) == 2:
            raise KeyboardInterrupt  # the way out of run()
    monkeypatch.setattr(app.broker, "claim_beat_slot", locked_once)
    beat.sleep = sleep
    caplog.set_level("INFO", logger="celery.beat")
    with pytest.raises(KeyboardInterrupt):
        beat.run()
    assert pauses == [0.1, 10.0]  # a short backoff, then the schedule's own wait
    told = "beat: each (tests.tasks.add) next at 1970-01-01 00:16:50+00:00"  # said once
    assert caplog.text.count(told) == 1, caplog.text
    assert app.broker.db.execute("SELECT body FROM task").fetchall() == [("[[1,2],{}]",)]


@pytest.mark.slow  # on 3.11 in CI; the other Pythons skip it for time
def test_workers_with_dash_b_share_one_schedule(app, start_worker, tmp_path):
    record = tmp_path / "beats"
    conf = {"MINIQ_TEST_CONF": json.dumps({"beat_schedule": {"tick": {
        "task": "tests.tasks.record", "schedule": 0.5, "args": [str(record), "tick"]}}})}
    workers = start_worker("-c", "1", "-B", env=conf), start_worker("-c", "1", "-B", env=conf)
    wait_for(lambda: record.exists() and len(record.read_text().split()) >= 10, timeout=30,
             message="five periodic runs")
    for worker in workers:  # no slot claimed and not yet sent as we count
        worker.stop()
    slots = app.broker.db.execute("SELECT COUNT(*) FROM beat WHERE entry = 'tick'").fetchone()[0]
    sent = app.broker.db.execute("SELECT COUNT(*) FROM task").fetchone()[0]
    assert sent == slots - 1  # every slot sent once, whichever worker won it, but the first:
    # the entry was new to the file


def test_a_lone_worker_with_dash_b_runs_what_its_beat_sends(start_worker, tmp_path):
    record = tmp_path / "beats"  # no other process commits: its own sends must wake it
    worker = start_worker("-c", "1", "-B", env={"MINIQ_TEST_CONF": json.dumps({"beat_schedule": {
        "tick": {"task": "tests.tasks.record", "schedule": 0.3, "args": [str(record), "t"]}}})})
    wait_for(lambda: record.exists() and len(record.read_text().split()) >= 3, timeout=20,
             message="three periodic runs")
    assert "  beat entries: 1\n" in worker.output()  # its banner says so


# workflows --------------------------------------------------------------------------------------

def test_chain_passes_results_and_links_parents(app, start_worker):
    start_worker("-c", "2")
    result = chain(tasks.add.s(1, 2), tasks.add.s(10), tasks.add.si(5, 5)).apply_async()
    assert result.get(timeout=20) == 10 and result.parent.get(timeout=20) == 13
    assert (tasks.add.s(1, 1) | tasks.add.s(5)).delay().get(timeout=20) == 7


def test_a_failing_step_fails_the_rest_of_the_chain(app, start_worker):
    start_worker("-c", "2")
    result = chain(tasks.add.s(1, 2), tasks.fail.si("midway"), tasks.add.s(100)).apply_async()
    with pytest.raises(ValueError, match="midway"):
        result.get(timeout=20)


def test_group_inserts_all_or_nothing_and_collects_results(app, start_worker):
    with pytest.raises(TypeError):
        group(tasks.echo.s(1), tasks.echo.s({2})).apply_async()
    assert app.broker.db.execute("SELECT COUNT(*) FROM task").fetchone()[0] == 0
    results = group(tasks.add.s(i, i) for i in range(10)).apply_async()
    start_worker("-c", "2")
    assert results.get(timeout=20) == [2 * i for i in range(10)]
    assert results.ready() and results.successful() and results.completed_count() == 10


def test_chord_waits_then_calls_back_with_all_results(app, start_worker):
    callback = chord([tasks.add.s(i, 1) for i in range(5)])(tasks.echo.s())
    assert app.broker.db.execute("SELECT status FROM task WHERE id = ?",
                                 (callback.id,)).fetchone() == (3,)  # waiting, not queued
    start_worker("-c", "2")
    assert callback.get(timeout=20) == [1, 2, 3, 4, 5]


def test_chord_with_a_failed_member_fails_its_callback(app, start_worker):
    start_worker("-c", "2")
    callback = chord([tasks.add.s(1, 1), tasks.fail.si("member")], tasks.echo.s()).apply_async()
    with pytest.raises(ValueError, match="member"):  # as Celery: the member's own error first
        callback.get(timeout=20)
    with pytest.raises(ChordError, match="ValueError"):  # the callback's own
        app.AsyncResult(callback.id).get(timeout=20)


# queues and priority ----------------------------------------------------------------------------

def test_a_worker_serves_only_its_queues(app, start_worker, monkeypatch):
    monkeypatch.setitem(app.conf, "task_routes", {"tests.tasks.mul*": {"queue": "never"},
                                                  "tests.tasks.echo": {"queue": "b"}})

    on_a = tasks.add.apply_async((1, 1), queue="a")
    routed = tasks.echo.delay("routed")
    start_worker("-c", "1", "-Q", "a")
    assert on_a.get(timeout=20) == 2
    assert routed.state == "PENDING"
    assert app.broker.db.execute("SELECT queue FROM task WHERE id = ?", (routed.id,)).fetchone() == ("b",)
    start_worker("-c", "1", "-Q", "b")
    assert routed.get(timeout=20) == "routed"



def test_higher_priority_first_fifo_among_equals(app, start_worker, tmp_path):
    record = tmp_path / "order"
    for token, priority in [("low1", 0), ("high1", 9), ("low2", 0), ("high2", 9), ("mid", 5)]:
        tasks.record.apply_async((str(record), token), priority=priority)
    start_worker("-c", "1")
    wait_for(lambda: record.exists() and len(record.read_text().split()) == 10, message="5 runs")
    assert record.read_text().split()[0::2] == ["high1", "high2", "mid", "low1", "low2"]


def test_a_worker_serving_several_queues_takes_them_in_turn(app, start_worker, tmp_path):
    """As Celery's: a backlog in one queue does not hold up the others; each queue by
    priority, then age."""
    record = tmp_path / "order"
    for queue, tokens in (("ta", "a1 a2 a3 a4 a5 a6"), ("tb", "b1 b2 b3"), ("tc", "c1")):
        for token in tokens.split():
            priority = 9 if token == "b3" else 0
            tasks.record.apply_async((str(record), token), queue=queue, priority=priority)
    start_worker("-c", "1", "-Q", "ta,tb,tc")
    wait_for(lambda: record.exists() and len(record.read_text().split()) == 20, message="10 runs")
    assert record.read_text().split()[0::2] == "a1 b3 c1 a2 b1 a3 b2 a4 a5 a6".split()


# the inspection commands ------------------------------------------------------------------------

def cli(broker_url, *args, **kw):
    return run_cli("-A", "tests.tasks", *args, env={"MINIQ_BROKER_URL": broker_url}, **kw)


def test_call_result_and_purge(app, start_worker, broker_url):
    queued = [tasks.add.delay(1, 1) for _ in range(3)]
    env = dict(__import__("os").environ, MINIQ_BROKER_URL=broker_url, PYTHONPATH=ROOT)
    asked = subprocess.run([sys.executable, "-m", "miniq", "-A", "tests.tasks", "purge"],
                           input="n\n", env=env, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert asked.returncode == 1 and queued[0].state == "PENDING"
    assert "Purged 3 messages from 1 known task queue." in cli(broker_url, "purge", "-f").stdout
    sent = cli(broker_url, "call", "tests.tasks.add", "--args", "[2, 3]")
    task_id = sent.stdout.strip()
    start_worker("-c", "1")
    shown = cli(broker_url, "result", task_id, "--wait", "--timeout", "20")
    assert shown.stdout == "5\n"
    bad = cli(broker_url, "call", "tests.tasks.add", "--args", "[1,")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_options_miniq_would_not_honour_are_refused_at_the_call(app):
    with pytest.raises(TypeError, match="serializer"):
        tasks.add.apply_async((1, 1), serializer="pickle")
    with pytest.raises(ImproperlyConfigured, match="rate_limit='10/x' is not a rate"):
        app.task(rate_limit="10/x")(lambda: None)
    assert app.broker.db.execute("SELECT COUNT(*) FROM task").fetchone()[0] == 0
