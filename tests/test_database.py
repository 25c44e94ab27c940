"""The database file itself: where a relative URL points, whose file miniq will
use, and what it refuses to take over."""
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading

import pytest

import miniq.app
from miniq import Miniq
from miniq.broker import APPLICATION_ID, SCHEMA, SCHEMA_VERSION, Broker
from miniq.exceptions import ImproperlyConfigured, OperationalError, TimeoutError
from miniq.rates import RateBroker
from tests.conftest import ROOT, run_cli, wait_for

@pytest.fixture(autouse=True)
def keep_the_default_app():
    """Apps made here must not become the default app of the tests that follow."""
    saved = miniq.app._default
    yield
    miniq.app._default = saved


PROJ = textwrap.dedent("""
    from miniq import Miniq
    app = Miniq("proj", broker="sqlite:///proj.db")

    @app.task
    def add(x, y):
        return x + y
""")


def test_a_relative_url_means_the_same_file_from_any_folder(tmp_path):
    """A worker started in the app's folder and a producer run from elsewhere meet."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "proj.py").write_text(PROJ)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "app"), ROOT]))
    env.pop("MINIQ_BROKER_URL", None)
    worker = subprocess.Popen([sys.executable, "-m", "miniq", "-A", "proj", "worker", "-c", "1"],
                              cwd=tmp_path / "app", env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        producer = "import proj; print(proj.add.delay(2, 3).get(timeout=20))"
        out = subprocess.run([sys.executable, "-c", producer], cwd=elsewhere, env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == "5", out.stderr
        assert os.path.exists(tmp_path / "app" / "proj.db")
        assert not os.path.exists(elsewhere / "proj.db")
    finally:
        os.killpg(worker.pid, 9)
        worker.wait(10)


def test_an_absolute_url_and_an_interactive_app_keep_their_meaning(tmp_path, monkeypatch):
    absolute = Miniq("a", broker=f"sqlite:///{tmp_path / 'abs.db'}")
    assert absolute.broker.path == str(tmp_path / "abs.db")
    monkeypatch.chdir(tmp_path)  # no file made this app: the current folder, as before
    made = subprocess.run([sys.executable, "-c", "from miniq import Miniq; "
                           "print(Miniq(broker='sqlite:///x.db').broker.path)"],
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=ROOT),
                          capture_output=True, text=True, timeout=30)
    assert made.stdout.strip() == str(tmp_path / "x.db"), made.stderr


def test_another_applications_sqlite_file_is_refused_and_left_unchanged(tmp_path):
    path = tmp_path / "theirs.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE task (id INTEGER, title TEXT)")
    db.execute("PRAGMA user_version = 7")
    db.commit()
    db.close()
    with pytest.raises(ImproperlyConfigured, match="not a miniq database"):
        Broker(str(path)).db
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 7
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert tables == ["task"]
    db.close()


def test_a_file_that_cannot_be_used_is_the_operational_error_of_a_send(tmp_path, monkeypatch):
    """As Celery's guide catches a broker it cannot reach (``except add.OperationalError``),
    and a setup error still, as the command line reports it."""
    monkeypatch.setattr(miniq.app, "_default", miniq.app._default)  # kept for the others
    app = Miniq("gone", broker=f"sqlite:///{tmp_path / 'no' / 'such.db'}")
    add = app.task(name="gone.add")(lambda x, y: x + y)
    for error in (add.OperationalError, ImproperlyConfigured):
        with pytest.raises(error, match="database folder .* does not exist"):
            add.delay(2, 2)


def test_connections_opening_a_new_file_at_once_all_take_it_for_miniq_s(tmp_path):
    """One writes the schema while another checks the file is miniq's: the check reads
    one snapshot, never the tables without the mark that comes with them. (Each thread
    has a connection of its own, as each process does.)"""
    errors = []

    def open_it(path, barrier):
        barrier.wait(10)
        try:
            Broker(path).db
        except Exception as exc:  # noqa: BLE001 - reported to the test
            errors.append(str(exc))

    for run in range(30):  # the two reads fell either side of the schema in ~1 run in 4
        barrier = threading.Barrier(6)
        threads = [threading.Thread(target=open_it, args=(str(tmp_path / f"{run}.db"), barrier))
                   for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == [] and not any(thread.is_alive() for thread in threads)


def test_the_worker_says_so_in_one_line_for_a_foreign_file(tmp_path):
    path = tmp_path / "theirs.db"
    sqlite3.connect(path).execute("CREATE TABLE notes (body TEXT)").connection.commit()
    done = run_cli("-A", "tests.tasks", "worker", env={"MINIQ_BROKER_URL": f"sqlite:///{path}"})
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "not a miniq database" in done.stderr


def test_a_file_marked_as_miniq_s_and_a_file_from_before_the_mark(tmp_path):
    fresh = Broker(str(tmp_path / "new.db"))
    assert fresh.db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    fresh.close()
    old = sqlite3.connect(tmp_path / "old.db")  # schema 1: no mark, no machine column
    old.executescript(SCHEMA.replace(",\n    machine     TEXT", "")
                      + "DROP TABLE rate; PRAGMA user_version = 1;")
    old.close()
    upgraded = Broker(str(tmp_path / "old.db"))
    upgraded.register("w", "host", 1, 1, ["celery"], "here")
    assert upgraded.workers()[0].machine == "here"
    assert upgraded.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    upgraded.close()


def test_a_file_of_schema_2_gains_the_worker_s_node_name_and_task_names(tmp_path):
    old = sqlite3.connect(tmp_path / "v2.db")
    lines = [line for line in SCHEMA.splitlines() if not line.startswith(("    node ", "    tasks "))]
    without = "\n".join(lines).replace("machine     TEXT,", "machine     TEXT ")
    old.executescript(without + f"PRAGMA user_version = 2; PRAGMA application_id = {APPLICATION_ID};")
    assert [c[1] for c in old.execute("PRAGMA table_info(worker)")][-1] == "machine"
    old.close()
    upgraded = Broker(str(tmp_path / "v2.db"))
    upgraded.register("w", "host", 1, 1, ["celery"], "here", "w1@host", ["b.task", "a.task"])
    worker = upgraded.workers()[0]
    assert (worker.node, json.loads(worker.tasks)) == ("w1@host", ["b.task", "a.task"])
    assert upgraded.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    upgraded.close()


def test_a_file_of_schema_3_gains_the_rate_table(tmp_path):
    old = sqlite3.connect(tmp_path / "v3.db")
    old.executescript(SCHEMA + "DROP TABLE rate; DROP INDEX task_line;"
                      f" PRAGMA user_version = 3; PRAGMA application_id = {APPLICATION_ID};")
    old.close()
    upgraded = RateBroker(str(tmp_path / "v3.db"))
    assert upgraded.book("w", []) == []
    assert upgraded.db.execute("SELECT COUNT(*) FROM rate").fetchone()[0] == 0
    assert upgraded.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'task_line'").fetchone()
    assert upgraded.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    upgraded.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file of another user needs root")
def test_a_database_of_another_user_is_refused(tmp_path):
    path = tmp_path / "planted.db"
    Broker(str(path)).db.close()
    os.chown(path, 12345, 12345)
    with pytest.raises(ImproperlyConfigured, match="belongs to another user"):
        Broker(str(path)).db


def test_a_planted_link_is_not_followed_to_create_a_file(tmp_path):
    target = tmp_path / "victim.db"
    os.symlink(target, tmp_path / "miniq.db")  # dangling: creating would make the target
    with pytest.raises(ImproperlyConfigured):
        Broker(str(tmp_path / "miniq.db")).db
    assert not target.exists()


def test_a_worker_and_a_long_lived_producer_keep_serving_once_the_wal_is_deleted(
        app, start_worker):
    """Both held the file open: each notices, reopens and goes on. A task sent in the
    moment both notice can fail, as the README says; later ones all run."""
    from tests import tasks
    start_worker("-c", "1")
    assert tasks.add.delay(1, 1).get(timeout=20) == 2
    os.unlink(app.broker.path + "-wal")
    tasks.add.delay(2, 2)  # sent while the worker may not have noticed yet

    def a_task_runs():
        try:
            return tasks.add.delay(3, 3).get(timeout=3) == 6
        except (TimeoutError, OperationalError):  # the moment both notice
            return False
    wait_for(a_task_runs, timeout=30, message="a task sent after the WAL was deleted runs")
    assert [tasks.add.delay(i, i).get(timeout=10) for i in range(5)] == [0, 2, 4, 6, 8]


def register(broker, name):
    broker.register(name, "host", 1, 1, ["celery"], "machine")


def test_a_connection_that_has_not_noticed_a_deleted_wal_writes_nowhere_stale(tmp_path):
    """One process reopened after the WAL was deleted; another, which looked a moment
    before, writes next. Into the deleted WAL, its frames would be indexed for a file
    no new connection can read: every read of the file would fail from then on."""
    path = str(tmp_path / "miniq.db")
    noticed, late = Broker(path), Broker(path)
    register(noticed, "a")
    register(late, "b")
    os.unlink(path + "-wal")
    noticed._local.fresh_until = 0.0  # its next use looks at the files
    assert len(noticed.workers()) == 2
    late._local.fresh_until = float("inf")  # it looked a moment ago
    register(late, "c")
    assert {w.id for w in noticed.workers()} == {"a", "b", "c"}
    assert {w.id for w in Broker(path).workers()} == {"a", "b", "c"}


def test_a_reader_whose_connection_was_reopened_sees_a_commit_it_had_not_read(tmp_path):
    """data_version counts afresh on a new connection: a waiting get() compared the old
    connection's number with the new one's and could sleep through a result."""
    path = str(tmp_path / "miniq.db")
    reader, writer = Broker(path), Broker(path)
    register(writer, "a")
    seen = reader.data_version()
    register(writer, "b")  # the result the reader waits for
    os.unlink(path + "-wal")
    reader._local.fresh_until = 0.0  # reopens: its new connection starts counting again
    assert reader.data_version() != seen
    assert len(reader.workers()) == 2


def test_a_connection_opened_after_the_wal_was_deleted_works_once_the_holder_notices(
        tmp_path):
    """The new connection finds the shared index naming pages of a WAL it cannot read;
    the old connection, on noticing, saves them into the database and clears the index."""
    path = str(tmp_path / "miniq.db")
    holder = Broker(path)
    register(holder, "a")
    os.unlink(path + "-wal")
    with pytest.raises(ImproperlyConfigured, match="disk I/O error"):
        Broker(path).db
    holder._local.fresh_until = 0.0
    register(holder, "b")
    assert {w.id for w in Broker(path).workers()} == {"a", "b"}


def test_a_connection_opened_before_a_fork_is_closed_when_the_child_reconnects(tmp_path):
    """Left to the collector, Python 3.13 warns about it while the child runs a task, and a
    soft limit's exception raised in that moment is lost: the task would run on for ever."""
    broker = Broker(str(tmp_path / "forked.db"))
    inherited = broker.db
    broker._local.pid = -1  # how the forked child sees it: another process opened it
    assert broker.db is not inherited
    with pytest.raises(sqlite3.ProgrammingError):
        inherited.execute("SELECT 1")


def test_apps_share_no_setting_of_the_defaults(tmp_path):
    first = Miniq("a", broker=f"sqlite:///{tmp_path / 'a.db'}")
    first.conf.beat_schedule["tick"] = {"task": "a.tick", "schedule": 1.0}
    second = Miniq("b", broker=f"sqlite:///{tmp_path / 'b.db'}")
    assert second.conf.beat_schedule == {} and second.conf.task_routes is None  # as Celery's


def test_an_app_closes_what_it_holds_open_and_a_dropped_one_leaves_no_socket(tmp_path):
    """As Celery's: ``close()`` and ``with`` let go of an app's connection (Python 3.13
    warns of one collected open) and of its hint socket, and the app opens them again if
    used; an app a test drops leaves no open socket to be collected (``-W error`` suites)."""
    script = textwrap.dedent(f"""
        import gc, sys, warnings
        warnings.simplefilter("error", ResourceWarning)
        from miniq import Miniq

        with Miniq("b", broker="sqlite:///{tmp_path}/b.db") as app:
            task = app.task(lambda: None, name="t")
            task.delay()
        task.delay()  # used again: opened again
        app.close()
        assert app.broker.db.execute("SELECT COUNT(*) FROM task").fetchone()[0] == 2
        app.close()
        del app, task
        gc.collect()
        print("dropped:", file=sys.stderr, flush=True)
        app = Miniq("a", broker="sqlite:///{tmp_path}/a.db")
        app.task(lambda: None, name="t").delay()
        del app
        gc.collect()
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 0, done.stderr
    closed, dropped = done.stderr.split("dropped:\n")
    assert closed == "" and "socket" not in dropped, done.stderr
    if sys.version_info < (3, 13):  # where a connection collected open gives no warning
        assert dropped == ""
