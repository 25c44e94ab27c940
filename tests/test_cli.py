"""``python -m miniq ... worker`` as a user types it: bad setup ends in one clear
line on stderr and exit status 2; the ``-A`` forms load an app from the current folder."""
import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import types

import pytest

import miniq.app
from miniq import control
from miniq.app import load_app
from miniq.exceptions import ImproperlyConfigured
from tests import tasks
from tests.conftest import ROOT, run_cli, wait_for


def worker_cli(*args, options=(), broker_url=None, cwd=ROOT):
    env = {"MINIQ_BROKER_URL": broker_url} if broker_url else None
    return run_cli(*args, "worker", "-c", "1", *options, env=env, cwd=cwd)


def assert_setup_error(proc, *fragments):
    """Exit 2 and one line, ``miniq: error: ...``, naming what is wrong; no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stdout == ""  # no banner either
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("miniq: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], proc.stderr


# 12. bad setup ---------------------------------------------------------------------------

def test_app_module_that_does_not_exist():
    proc = worker_cli("-A", "no_such_miniq_app")
    assert_setup_error(proc, "cannot import", "'no_such_miniq_app'")


def test_app_module_whose_import_fails(tmp_path):
    (tmp_path / "brokenapp.py").write_text("import no_such_dependency_of_miniq\n")
    proc = worker_cli("-A", "brokenapp", cwd=tmp_path)
    assert_setup_error(proc, "'brokenapp'", "no_such_dependency_of_miniq", "brokenapp.py, line 1")


def test_an_import_failing_deep_in_the_project_names_its_file_and_line(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "helpers.py").write_text("import os\nfrom os import no_such_name\n")
    (tmp_path / "deepapp.py").write_text("import pkg.helpers\n")
    proc = worker_cli("-A", "deepapp", cwd=tmp_path)
    assert_setup_error(proc, "no_such_name", f"{tmp_path / 'pkg' / 'helpers.py'}, line 2")


@pytest.mark.parametrize("given, told", [("proj.py", "as -A proj"),
                                         ("proj.py:app", "as -A proj:app"),
                                         ("sub/proj.py", "as -A proj from ")])
def test_an_app_given_as_its_file_is_told_its_module(tmp_path, given, told):
    (tmp_path / "sub").mkdir()
    for folder in (tmp_path, tmp_path / "sub"):
        (folder / "proj.py").write_text("from miniq import Miniq\napp = Miniq('proj')\n")
    proc = worker_cli("-A", given, cwd=tmp_path)
    assert_setup_error(proc, f"{given!r} is a file", told)


def test_module_that_holds_no_app(tmp_path):
    (tmp_path / "noapp.py").write_text("value = 1\n")
    proc = worker_cli("-A", "noapp", cwd=tmp_path)
    assert_setup_error(proc, "'noapp'", "not a miniq app")


def test_dash_a_package_takes_its_celery_module_before_other_apps_in_it(tmp_path, monkeypatch):
    """As Celery's: pkg.app or pkg.celery, then the module pkg.celery, then any app."""
    (tmp_path / "twoapps").mkdir()
    (tmp_path / "twoapps" / "__init__.py").write_text(
        "from miniq import Celery\nmain_app = Celery('init', set_as_current=False)\n")
    (tmp_path / "twoapps" / "celery.py").write_text(
        "from miniq import Celery\napp = Celery('sub', set_as_current=False)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(miniq.app, "_default", miniq.app._default)  # it becomes the current app
    assert load_app("twoapps").main == "sub"
    with pytest.raises(ImproperlyConfigured, match="it has no such attribute"):
        load_app("twoapps:nosuch")


def test_celerys_global_options_broker_workdir_version_and_celery_app(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "wd.py").write_text(
        "from miniq import Celery\napp = Celery('wd', broker='sqlite:///app.db')\n"
        "app.task(name='wd.add')(lambda x, y: x + y)\n")
    sent = run_cli("--workdir", str(tmp_path / "elsewhere"), "-A", "wd", "call", "wd.add",
                   "-b", f"sqlite:///{tmp_path / 'given.db'}", "--args", "[1, 2]")
    assert sent.returncode == 0, sent.stderr
    assert (tmp_path / "given.db").exists() and not (tmp_path / "elsewhere" / "app.db").exists()
    for variable in ("CELERY_APP", "APP"):  # Celery's -A reads both, APP first
        shown = run_cli("purge", "-f", env={variable: "wd"}, cwd=tmp_path / "elsewhere")
        assert shown.returncode == 0 and "No messages purged" in shown.stdout, shown.stderr
    by_env = run_cli("-A", "wd", "call", "wd.add", "--args", "[1, 2]", cwd=tmp_path / "elsewhere",
                     env={"BROKER_URL": f"sqlite:///{tmp_path / 'env.db'}"})  # as Celery's -b
    assert by_env.returncode == 0, by_env.stderr
    with contextlib.closing(sqlite3.connect(tmp_path / "env.db")) as db:
        assert db.execute("SELECT name FROM task").fetchall() == [("wd.add",)]
    (tmp_path / "elsewhere" / "wdconf.py").write_text("task_default_queue = 'fromconf'\n")
    for options, env in ((["--config", "wdconf"], None), ([], {"CONFIG_MODULE": "wdconf"})):
        configured = run_cli("-A", "wd", "call", "wd.add", "--args", "[1, 2]", *options,
                             cwd=tmp_path / "elsewhere", env=env)  # as Celery's --config
        assert configured.returncode == 0, configured.stderr
    with contextlib.closing(sqlite3.connect(tmp_path / "elsewhere" / "app.db")) as db:
        assert db.execute("SELECT queue FROM task").fetchall() == [("fromconf",)] * 2
    backend = run_cli("-A", "wd", "status", "--result-backend", "redis://x",
                      cwd=tmp_path / "elsewhere")
    assert backend.returncode == 2 and "result backend 'redis://x'" in backend.stderr
    far = run_cli("-A", "wd", "call", "wd.add", "-a", "[1, 2]", "--expires", "1e12",
                  cwd=tmp_path / "elsewhere")
    assert far.returncode == 2 and "years 1 to 9999" in far.stderr and "Traceback" not in far.stderr
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("miniq ")


def test_database_folder_that_does_not_exist(tmp_path):
    folder = tmp_path / "missing"
    proc = worker_cli("-A", "tests.tasks", broker_url=f"sqlite:///{folder}/x.db")
    assert_setup_error(proc, str(folder), "does not exist")
    assert not folder.exists()


def test_database_folder_that_is_not_writable(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):  # root writes anyway: a regular file as the folder
            folder = tmp_path / "afile"  # fails for everyone
            folder.write_text("")
        proc = worker_cli("-A", "tests.tasks", broker_url=f"sqlite:///{folder}/x.db")
        assert_setup_error(proc, str(folder))
    finally:
        (tmp_path / "locked").chmod(0o700)


def test_broker_url_that_is_not_sqlite():
    proc = worker_cli("-A", "tests.tasks", broker_url="redis://localhost:6379/0")
    assert_setup_error(proc, "'redis://localhost:6379/0'", "not supported")


def test_missing_app_option_is_a_usage_error():
    proc = run_cli("worker")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("usage: miniq") and "-A/--app" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("value", ["-1", "two", "1.5"])
def test_concurrency_that_is_not_a_whole_number_is_a_usage_error(value):
    proc = run_cli("-A", "tests.tasks", "worker", "-c", value)
    assert proc.returncode == 2 and proc.stderr.startswith("usage: miniq worker"), proc.stderr
    assert proc.stderr.splitlines()[-1] == ("miniq worker: error: argument -c/--concurrency:"
                                            f" must be a whole number, not '{value}'")


def test_concurrency_0_is_a_child_a_cpu_as_in_celery(start_worker):
    worker = start_worker("-c", "0")
    assert f"concurrency: {os.cpu_count()}" in worker.output()
    assert len(worker.children()) == os.cpu_count()


@pytest.mark.parametrize("how", ["-c", "conf"])
def test_more_children_than_the_user_may_run_is_refused_before_any_starts(how, tmp_path):
    """A count no fork could reach (and past 64 bits, none SQLite could store)."""
    value = "99999999999999999999"
    if how == "-c":
        proc = run_cli("-A", "tests.tasks", "worker", "-c", value)
    else:
        (tmp_path / "huge.py").write_text(
            "from tests.tasks import app\n"
            f"app.conf.worker_concurrency = {value}\n")
        proc = run_cli("-A", "huge", "worker", env={"PYTHONPATH": f"{tmp_path}:{ROOT}"})
    assert_setup_error(proc, f"concurrency {value}: more processes than this user may run")


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-5"])
def test_a_time_limit_that_is_not_a_finite_positive_number_is_a_usage_error(value):
    proc = run_cli("-A", "tests.tasks", "worker", "--soft-time-limit", value)
    assert proc.returncode == 2 and proc.stderr.startswith("usage: miniq worker"), proc.stderr
    assert proc.stderr.splitlines()[-1].endswith(
        f"must be a positive number of seconds, not '{value}'")


def test_worker_help_explains_every_option():
    proc = run_cli("worker", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "least severe messages logged (default: WARNING)" in proc.stdout
    assert "how children start (default: fork on Linux)" in proc.stdout


def test_worker_prints_a_banner_at_the_default_log_level(app, broker_url, start_worker):
    worker = start_worker("-c", "1", "-Q", "a,b", "--loglevel", "warning", ready=False)
    out = wait_for(lambda: "tasks.wait_for_gate\n" in worker.output() and worker.output(),
                   message="the banner")
    path = broker_url[len("sqlite:///"):]
    assert out.splitlines()[:5] == ["miniq worker for tests.tasks", f"  database:    {path}",
                                    "  concurrency: 1", "  queues:      a,b", "[tasks]"]
    assert "  . tests.tasks.add\n" in out and "  . tests.tasks.wait_for_gate\n" in out
    assert "ready" not in out  # the INFO log line stays quiet at WARNING
    assert app.tasks["tests.tasks.add"].apply_async((2, 2), queue="b").get(timeout=30) == 4


# -A forms, from the current folder ----------------------------------------------------------

PROJ = """
from miniq import Miniq
app = Miniq("myproj", broker="sqlite:///miniq.db")  # relative: beside this module

@app.task
def add(x, y):
    return x + y
"""


@pytest.mark.parametrize("option, spec", [("--app", "myproj:app"), ("-A", "myproj.app"), ("-A", "myproj")])
def test_app_option_forms_load_the_app(app, tmp_path, option, spec):
    (tmp_path / "myproj.py").write_text(PROJ)
    log_path = tmp_path / "worker.log"
    env = dict(os.environ, PYTHONPATH=ROOT)
    with open(log_path, "w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "miniq", option, spec, "worker", "-c", "1", "-l", "info"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "ready" in log_path.read_text() or worker.poll() is not None,
                 message="worker ready")
        assert worker.poll() is None, log_path.read_text()
        # app is tests.tasks' app on tmp_path/miniq.db: the file the worker found by itself
        assert app.send_task("myproj.add", (2, 3)).get(timeout=30) == 5
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)


def test_a_task_still_made_by_celery_is_named_as_the_worker_starts(app, start_worker, tmp_path):
    """A module whose import was not swapped: its task is never registered, so never run."""
    pytest.importorskip("celery")
    (tmp_path / "halfway.py").write_text(
        "from celery import Task, shared_task, current_app\n"  # current_app: a proxy, no task
        "from tests.tasks import app\n"
        "@shared_task\ndef left_behind(): pass\n"
        "class Lazy:  # as Django's settings, unconfigured: looking at its class raises\n"
        "    __class__ = property(lambda self: 1 / 0)\n"
        "lazy = Lazy()\n")
    worker = start_worker("-c", "1", app_path="halfway:app", env={
        "PYTHONPATH": os.pathsep.join([str(tmp_path), ROOT])})
    assert "halfway.left_behind is a Celery task, not registered here" in worker.output()
    assert "current_app" not in worker.output()


# Celery's worker options, from real service files ---------------------------------------

def test_a_service_file_command_line_runs(app, tmp_path, start_worker):
    log, pidfile = tmp_path / "w.log", tmp_path / "w.pid"
    worker = start_worker("-c", "2", "-P", "prefork", "-E", "-O", "fair", "--without-gossip",
                          "--without-mingle", "--without-heartbeat",
                          "--prefetch-multiplier", "1", "-n", "worker1@%h",
                          "--max-tasks-per-child", "1", "--time-limit", "30",
                          "--soft-time-limit", "20", "--logfile", str(log),
                          "--pidfile", str(pidfile), "-B", "-s", str(tmp_path / "beat"),
                          "--scheduler", "celery.beat:PersistentScheduler",
                          "-S", str(tmp_path / "state"), "--heartbeat-interval", "10",
                          ready=False)
    wait_for(lambda: log.exists() and "ready" in log.read_text() or worker.proc.poll(),
             message="worker ready in its log file")
    assert worker.proc.poll() is None, worker.output()
    assert pidfile.read_text() == f"{worker.pid}\n"
    assert f"  node:        worker1@{socket.gethostname()}\n" in worker.output()
    assert "ready" not in worker.output()  # the log went to the file, not stderr
    told = [line.split("] ", 1)[1] for line in log.read_text().splitlines() if "no effect" in line]
    assert told == ["-E: no effect (miniq sends no monitoring events)",  # not -O fair, nor
                    "--heartbeat-interval: no effect (miniq sends no event heartbeats)",
                    "-s: no effect (-B's runs are kept in the database)",  # --without-*:
                    "-S: no effect (revoked tasks are kept in the database)"]  # as they are
    assert app.tasks["tests.tasks.add"].delay(1, 2).get(timeout=20) == 3
    first = app.tasks["tests.tasks.pid"].delay().get(timeout=20)
    wait_for(lambda: first not in worker.children(), message="the used child replaced")
    assert app.tasks["tests.tasks.pid"].delay().get(timeout=20) != first
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert not pidfile.exists()


def test_a_tasks_log_lines_and_prints_go_to_the_log_file_as_celerys(app, tmp_path, start_worker):
    """Its logger's lines name the task; print() and stderr are WARNING lines; the
    app's own logging setup gives way, as worker_hijack_root_logger says."""
    log = tmp_path / "w.log"
    start_worker("-c", "1", "-l", "INFO", "-f", str(log), env={  # -f: Celery's --logfile
        "MINIQ_TEST_CONF": json.dumps({"worker_task_log_format": "TASK %(task_name)s"
                                       "[%(task_id)s] %(levelname)s: %(message)s",
                                       "worker_log_format": "LOG %(levelname)s: %(message)s"})},
                 ready=False)
    logged = app.tasks["tests.tasks.log_line"].delay("hi")
    assert logged.get(timeout=20) == "SUCCESS"
    assert app.tasks["tests.tasks.prints"].delay("said").get(timeout=20) == "said"
    wait_for(lambda: "at last" in log.read_text(), message="the prints in the log file")
    text = log.read_text()
    assert f"TASK tests.tasks.log_line[{logged.id}] WARNING: hi from {logged.id}" in text
    assert "LOG WARNING: said out\n" in text and "LOG WARNING: said err\n" in text
    assert f"LOG WARNING: said {sys.stdout.encoding} at last\n" in text
    assert "LOG INFO: miniq worker" in text  # the manager's lines: its format too


def test_the_lines_about_each_task_come_from_celerys_loggers(app, start_worker):
    """As Celery's: a project's logging config that quiets celery.app.trace or
    celery.worker.strategy (or routes them) holds for miniq's worker too."""
    worker = start_worker("-c", "1", "-l", "INFO", env={"MINIQ_TEST_CONF": json.dumps(
        {"worker_log_format": "%(name)s %(levelname)s: %(message)s"})})
    result = app.tasks["tests.tasks.add"].delay(1, 2)
    assert result.get(timeout=20) == 3
    named = f"tests.tasks.add[{result.id}]"
    wait_for(lambda: f"celery.app.trace INFO: Task {named} succeeded" in worker.output(),
             message="the outcome's line from celery.app.trace")
    echo = app.tasks["tests.tasks.echo"]  # the value's repr, cut as Celery's is, not JSON
    said = [echo.delay(value) for value in ("ok", {"a": None}, "x" * 2000)]
    assert [len(r.get(timeout=20)) for r in said] == [2, 1, 2000]
    shown = [f"Task tests.tasks.echo[{r.id}] succeeded in " for r in said]
    wait_for(lambda: all(line in worker.output() for line in shown), message="the values")
    ok, mapping, long = [re.search(re.escape(line) + r"[\d.]+s: (.*)", worker.output())[1]
                         for line in shown]
    assert (ok, mapping) == ("'ok'", "{'a': None}")
    assert long.startswith("'xxx") and long.endswith("...") and len(long) < 1100
    assert f"celery.worker.strategy INFO: Task {named} received" in worker.output()


def test_the_log_date_formats_hold_as_celerys(app, start_worker):
    worker = start_worker("-c", "1", "-l", "INFO", env={"MINIQ_TEST_CONF": json.dumps(
        {"worker_log_format": "%(asctime)s|%(message)s", "worker_log_datefmt": "%H:%M",
         "worker_task_log_format": "%(asctime)s|T|%(message)s",
         "worker_task_log_datefmt": "%d"})})
    logged = app.tasks["tests.tasks.log_line"].delay("hi")
    assert logged.get(timeout=20) == "SUCCESS"
    wait_for(lambda: f"hi from {logged.id}" in worker.output(), message="the task's line")
    lines = worker.output().splitlines()
    assert re.fullmatch(r"\d\d\|T\|hi from " + logged.id,
                        next(line for line in lines if "hi from" in line))
    assert re.fullmatch(r"\d\d:\d\d\|Task tests\.tasks\.log_line\[.*\] received",
                        next(line for line in lines if "received" in line))


def test_a_redirect_level_no_print_could_use_is_refused_as_the_worker_starts(broker_url):
    """Else every task that prints would fail: as Celery's, the worker does not start."""
    done = run_cli("-A", "tests.tasks", "worker", env={
        "MINIQ_BROKER_URL": broker_url,
        "MINIQ_TEST_CONF": json.dumps({"worker_redirect_stdouts_level": "bogus"})})
    assert done.returncode != 0 and "worker_redirect_stdouts_level must be a logging level's" \
        " name, not 'bogus'" in done.stderr, done.stderr


def test_the_worker_logs_receipts_and_retries_in_celerys_words(app, start_worker):
    worker = start_worker("-c", "1", "-l", "INFO")
    result = app.tasks["tests.tasks.retry_forever"].delay(True)
    with pytest.raises(KeyError):
        result.get(timeout=20)
    named = f"tests.tasks.retry_forever[{result.id}]"
    assert f"Task {named} received" in worker.output()
    assert re.search(rf"Task {re.escape(named)} retry: Retry in [\d.e-]+s: KeyError\('original'\)",
                     worker.output()), worker.output()
    later = app.tasks["tests.tasks.retry_at"].delay(countdown=3600)  # not 3.6e+03s
    wait_for(lambda: f"Task tests.tasks.retry_at[{later.id}] retry: Retry in 3600s" in
             worker.output(), message="an hour's retry in whole seconds")
    shadowed = app.tasks["tests.tasks.add"].apply_async((1, 2), shadow="sums.small")
    assert shadowed.get(timeout=20) == 3  # as Celery's: logged by the name it was given
    wait_for(lambda: f"Task sums.small[{shadowed.id}] succeeded" in worker.output(),
             message="the shadow name in the log")


def test_time_limit_kills_a_task_that_runs_too_long(app, start_worker):
    start_worker("-c", "1", "--time-limit", "1")
    res = app.tasks["tests.tasks.sleep"].delay(30)
    with pytest.raises(Exception) as info:
        res.get(timeout=20)
    assert "TimeLimitExceeded" in type(info.value).__name__, info.value


@pytest.mark.parametrize("setting", [
    'worker_concurrency="4"', 'worker_max_tasks_per_child="100"',
    'worker_max_memory_per_child=1.5', "worker_heartbeat=0", "worker_lost_after=0.5",
    "result_expires=-5", 'result_expires="soon"', "task_time_limit=-1",
    'task_soft_time_limit=float("inf")', 'task_time_limit=float("nan")',
    'sqlite_synchronous="FUL"', "task_default_queue=5", "task_max_deliveries=0",
    'worker_start_method="vfork"',
    'task_time_limit=__import__("datetime").timedelta(seconds=30)',
    'worker_heartbeat=__import__("datetime").timedelta(seconds=1)'])
def test_a_setting_no_worker_could_use_is_refused_as_it_starts(setting, broker_url, tmp_path):
    (tmp_path / "badconf.py").write_text(
        f"from miniq import Miniq\napp = Miniq('badconf')\napp.conf.update({setting})\n")
    proc = worker_cli("-A", "badconf", broker_url=broker_url, cwd=tmp_path)
    assert_setup_error(proc, setting.split("=")[0])


@pytest.mark.parametrize("app_path, options, said", [
    (":", (), "names no module"), (".tasks", (), "names no module"),
    ("tests.tasks", ("-Q", "a,,b"), "cannot be empty"),
    ("tests.tasks", ("-Q", ","), "cannot be empty")])
def test_names_that_name_nothing_are_refused(app_path, options, said, broker_url):
    assert_setup_error(worker_cli("-A", app_path, options=options, broker_url=broker_url), said)


def test_purge_of_an_empty_queue_name_purges_nothing(app, broker_url):
    queued = tasks.add.delay(1, 1)
    assert_setup_error(run_cli("-A", "tests.tasks", "purge", "-Q", "", "-f",
                               env={"MINIQ_BROKER_URL": broker_url}), "cannot be empty")
    assert app.broker.db.execute("SELECT id FROM task").fetchall() == [(queued.id,)]


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite:///proj.db?mode=ro"])
def test_a_database_no_process_could_share_is_refused(url, tmp_path):
    proc = worker_cli("-A", "tests.tasks", broker_url=url, cwd=tmp_path)
    assert_setup_error(proc, "a file its processes share")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("pool", ["threads", "solo", "eventlet", "gevent"])
def test_a_pool_miniq_does_not_have_is_refused(pool):
    proc = worker_cli("-A", "tests.tasks", options=("-P", pool))
    assert_setup_error(proc, f"-P {pool}", "prefork")


def test_a_pidfile_naming_a_live_process_refuses(broker_url, tmp_path):
    pidfile = tmp_path / "w.pid"
    with subprocess.Popen(["sleep", "30"]) as other:
        pidfile.write_text(f"{other.pid}\n")
        proc = worker_cli("-A", "tests.tasks", options=("--pidfile", str(pidfile)),
                          broker_url=broker_url)
        other.kill()
    assert_setup_error(proc, str(pidfile), str(other.pid))
    assert pidfile.read_text() == f"{other.pid}\n"


def test_a_stale_pidfile_is_taken_over(app, tmp_path, start_worker):
    pidfile = tmp_path / "w.pid"
    with subprocess.Popen(["true"]) as gone:
        pass
    pidfile.write_text(f"{gone.pid}\n")
    worker = start_worker("-c", "1", "--pidfile", str(pidfile))
    assert pidfile.read_text() == f"{worker.pid}\n"


def test_the_pidfile_and_logfile_settings_stand_for_the_options_as_celerys(
        app, start_worker, tmp_path):
    """Celery's worker reads worker_pidfile and worker_logfile where no option is typed;
    worker_uid, which would have it drop its privileges, is refused as --uid is."""
    pidfile, logfile = tmp_path / "w.pid", tmp_path / "w.log"
    settings = {"worker_pidfile": str(pidfile), "worker_logfile": str(logfile)}
    worker = start_worker("-c", "1", env={"MINIQ_TEST_CONF": json.dumps(settings)},
                          ready=False)
    wait_for(lambda: logfile.exists() and " ready: " in logfile.read_text(), timeout=30,
             message="ready, in the log file")
    assert pidfile.read_text() == f"{worker.pid}\n"
    assert app.tasks["tests.tasks.add"].delay(1, 2).get(timeout=20) == 3
    refused = run_cli("-A", "tests.tasks", "worker", "-c", "1", env={
        "MINIQ_BROKER_URL": app.conf.broker_url,
        "MINIQ_TEST_CONF": json.dumps({"worker_uid": "nobody"})})
    assert_setup_error(refused, "worker_uid")


def test_purge_deletes_the_served_queues_tasks_first(app, start_worker):
    add = app.tasks["tests.tasks.add"]
    queued = [add.delay(1, 1), add.delay(2, 2)]
    other = add.apply_async((3, 3), queue="other")
    worker = start_worker("-c", "1", "--discard")  # Celery's other name of --purge
    assert "purge: Erased 2 messages from the queue." in worker.output()
    assert all(app.broker.state(res.id) is None for res in queued)
    assert app.broker.state(other.id) is not None
    assert add.delay(4, 4).get(timeout=20) == 8


def test_exclude_queues_leaves_their_tasks_queued(app, start_worker):
    add = app.tasks["tests.tasks.add"]
    skipped = add.apply_async((1, 1), queue="b")
    worker = start_worker("-c", "1", "-Q", "a,b", "-X", "b")
    assert "  queues:      a\n" in worker.output()
    assert add.apply_async((2, 2), queue="a").get(timeout=20) == 4
    assert skipped.state == "PENDING"


def test_exclude_queues_without_q_serves_the_default_queue_minus_them(app, start_worker):
    worker = start_worker("-c", "1", "-X", "other")
    assert "  queues:      celery\n" in worker.output()


def test_a_worker_without_q_serves_the_queues_task_queues_declares(app, start_worker):
    add = app.tasks["tests.tasks.add"]  # as Celery's, whose task_queues holds kombu Queues
    worker = start_worker("-c", "1", "-X", "b", env={"MINIQ_TEST_CONF": json.dumps(
        {"task_queues": ["a", "b", "c"]})})
    assert "  queues:      a,c\n" in worker.output()
    assert add.apply_async((2, 2), queue="c").get(timeout=20) == 4


def test_exclude_queues_that_leave_nothing_refuses():
    proc = worker_cli("-A", "tests.tasks", options=("-X", "celery"))
    assert_setup_error(proc, "-X celery", "no queue")


def test_worker_takes_celerys_fatal_log_level():
    from miniq.cli import build_parser
    args = build_parser().parse_args(["-A", "proj", "worker", "-l", "fatal"])
    assert args.loglevel == "FATAL"


def test_worker_options_come_from_celerys_variables_where_none_is_typed(start_worker, tmp_path):
    """As Celery's command line (click's CELERY_WORKER_<OPTION>); a typed option wins;
    %% in a node name is a %."""
    env = {"CELERY_WORKER_QUEUES": "a,b", "CELERY_WORKER_CONCURRENCY": "3",
           "CELERY_WORKER_WITHOUT_GOSSIP": "true", "CELERY_WORKER_HOSTNAME": "w%%1@%h",
           "CELERY_WORKER_SEND_TASK_EVENTS": "1", "CELERY_WORKER_HELP": "1",  # no options
           "CELERY_WORKER_BROKER": "sqlite:///elsewhere.db"}  # of Celery's worker: ignored
    worker = start_worker("-c", "1", env=env)
    assert "  concurrency: 1\n  queues:      a,b\n" in worker.output()
    assert f"w%1@{socket.gethostname()}" in worker.output()
    for variable, said in (("CELERY_WORKER_DETACH", "miniq's worker has no such option"),
                           ("CELERY_BEAT_DETACH", "miniq's beat has no such option"),
                           ("CELERY_WORKER_POOL", "-P solo: miniq's only pool")):
        command = variable.split("_")[1].lower()
        proc = run_cli("-A", "tests.tasks", command, env={variable: "solo"})
        assert proc.returncode == 2 and said in proc.stderr, proc.stderr


def test_the_command_a_restart_runs_is_the_one_that_started_the_worker(monkeypatch):
    """Python 3.9 keeps no record of it: made again from -m's module, or a script's path."""
    from miniq.cli_worker import command_line
    monkeypatch.delattr(sys, "orig_argv", raising=False)
    main = sys.modules["__main__"]
    for spec, argv, made in ((types.SimpleNamespace(name="miniq.__main__"),
                              ["/x/miniq/__main__.py", "-A", "p", "worker"],
                              ["-m", "miniq", "-A", "p", "worker"]),
                             (None, ["run.py", "worker"], ["run.py", "worker"])):
        monkeypatch.setattr(main, "__spec__", spec, raising=False)
        monkeypatch.setattr(sys, "argv", argv)
        assert command_line() == [sys.executable, *made]


def test_autoscale_runs_max_children(start_worker):
    worker = start_worker("--autoscale", "1,3")  # as Celery's: the larger is the max
    assert "  concurrency: 3\n" in worker.output()
    wait_for(lambda: len(worker.children()) == 3, message="three children")


def test_a_worker_refuses_a_beat_scheduler_miniq_lacks(broker_url):
    done = run_cli("-A", "tests.tasks", "worker", "-B", "--scheduler",
                   "django_celery_beat.schedulers:DatabaseScheduler",
                   env={"MINIQ_BROKER_URL": broker_url})
    assert done.returncode != 0 and "DatabaseScheduler' is not supported" in done.stderr


def test_worker_help_says_which_celery_options_do_nothing():
    out = run_cli("worker", "--help").stdout
    assert "accepted with no effect on one machine" in out
    honoured, ignored = out.split("no effect on one machine")
    for flag in ("--without-gossip", "--optimization {default,fair}", "--task-events, --events",
                 "--statedb", "--schedule-filename", "--heartbeat-interval"):
        assert flag in ignored, flag
    assert "--prefetch-multiplier" in honoured and "--prefetch-multiplier" not in ignored
    assert "does not shrink the pool" in out


@pytest.mark.parametrize("options, said", [
    (("-O", "bogus"), "invalid choice: 'bogus'"),  # Celery takes default or fair
    (("--max-mem", "100000"), "unrecognized arguments: --max-mem"),  # no abbreviation
])
def test_a_celery_option_given_what_celery_refuses_is_refused(options, said):
    proc = run_cli("-A", "tests.tasks", "worker", *options)
    assert proc.returncode == 2 and said in proc.stderr, proc.stderr


@pytest.mark.parametrize("args, said", [
    (("events",), "events: Celery's, not miniq's (miniq sends no events: `miniq dashboard`"),
    (("multi", "start", "w1"), "multi: Celery's, not miniq's (run one `miniq worker` for each"),
    (("worker", "-c", "2", "--detach"), "--detach: Celery's, not miniq's (miniq's worker stays"),
    (("worker", "--include=proj.tasks"), "--include: Celery's, not miniq's (set app.conf.incl"),
    (("nosuch",), "invalid choice: 'nosuch'"),  # not Celery's either: argparse's own word
    (("inspect", "list"), "invalid choice: 'list'"),  # Celery's list is no inspect command
])
def test_celerys_commands_and_options_miniq_lacks_are_named_so(args, said):
    proc = run_cli("-A", "tests.tasks", *args)
    assert proc.returncode == 2 and said in proc.stderr.splitlines()[-1], proc.stderr


def test_node_names_and_paths_expand_as_celery_s(monkeypatch):
    monkeypatch.setattr(socket, "gethostname", lambda: "box.example.com")
    assert control.nodename(None) == "celery@box.example.com"
    assert control.nodename("w1") == "celery@w1"  # one part is the host, as Celery's nodesplit
    assert control.nodename("w1@%h") == "w1@box.example.com"
    assert control.nodename("%n-%i%I@%d") == "box-0@example.com"
    assert control.node_format("/run/%n.pid", control.nodename(None)) == "/run/celery.pid"
    assert control.node_format("%n%I.log", "w1@web.local") == "w1.log"
    assert control.node_format("%h|%d|%p|%i", "w1@web.local") == "web.local|local|w1@web.local|0"


def test_an_unknown_format_in_a_path_refuses(broker_url, tmp_path):
    proc = worker_cli("-A", "tests.tasks", options=("--pidfile", str(tmp_path / "%Q.pid")),
                      broker_url=broker_url)
    assert_setup_error(proc, "unknown format %Q")
    assert list(tmp_path.iterdir()) == []
