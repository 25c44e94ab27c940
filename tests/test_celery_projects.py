"""Projects laid out as Celery's own examples lay them out, with ``celery``
swapped for ``miniq`` and the broker pointed at a file, run by a real worker:
the next-steps package (``-A proj`` finds ``proj.celery``), the periodic-tasks
script (``app.start()`` and ``on_after_configure``), and a Django-style project
(settings with a ``CELERY_`` namespace, ``autodiscover_tasks``, ``shared_task``)
with no Django installed."""
import contextlib
import copy
import importlib
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import types
from datetime import datetime, timezone

import pytest

import miniq
import miniq.app
import miniq.project
from miniq import Celery, chain, chord, group
from miniq.exceptions import ImproperlyConfigured
from tests.conftest import ROOT, WorkerProcess, wait_for


def write(folder, files):
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())


@pytest.fixture
def project(tmp_path):
    """(write files, start a worker there, run a producer script there)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), ROOT]))
    env.pop("MINIQ_BROKER_URL", None)
    workers = []

    def start(*args, module="miniq"):
        log = tmp_path / f"worker-{len(workers)}.log"
        workers.append(WorkerProcess(list(args), env, log, cwd=tmp_path, module=module))
        return workers[-1].wait_ready()

    def run(script):
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr + "".join(w.output() for w in workers)
        return done.stdout.split()

    yield (lambda files: write(tmp_path, files)), start, run
    for worker in workers:
        worker.kill_group()


NEXT_STEPS = {
    "proj/__init__.py": "",
    "proj/celery.py": """
        from miniq import Celery

        app = Celery("proj", broker="sqlite:///proj.db", backend="rpc://",
                     include=["proj.tasks"])
        app.conf.update(result_expires=3600)

        if __name__ == "__main__":
            app.start()
    """,
    "proj/tasks.py": """
        from .celery import app


        @app.task
        def add(x, y):
            return x + y


        @app.task
        def mul(x, y):
            return x * y


        @app.task
        def xsum(numbers):
            return sum(numbers)


        @app.task(time_limit=1)
        def hang():
            import time
            time.sleep(30)
    """,
}


def test_the_next_steps_package_runs_with_a_plain_dash_a(project):
    write, start, run = project
    write(NEXT_STEPS)
    start("-A", "proj", "worker", "-l", "INFO")
    assert run("""
        from miniq import group
        from proj.tasks import add, mul, xsum
        print(add.delay(4, 4).get(timeout=20))
        print(mul.delay(8, 8).get(timeout=20))
        print(xsum.delay([1, 2, 3]).get(timeout=20))
        print(sum(group(add.s(i, i) for i in range(10)).apply_async().get(timeout=20)))
    """) == ["8", "64", "6", "90"]


def test_the_next_steps_package_runs_as_its_own_module_with_its_tasks_limits(project):
    """``python -m proj.celery worker`` (app.start()): the tasks its includes make go to
    the app of ``proj.celery`` the module, which runs the worker, limits included."""
    write, start, run = project
    write(NEXT_STEPS)
    start("worker", "-l", "INFO", "-c", "1", module="proj.celery")
    assert run("""
        from miniq.exceptions import TimeLimitExceeded
        from proj.tasks import add, hang
        print(add.delay(4, 4).get(timeout=20))
        try:
            hang.delay().get(timeout=20)
        except TimeLimitExceeded:
            print("limited")
    """) == ["8", "limited"]


def test_a_script_whose_command_fails_exits_with_its_status(project, tmp_path):
    """``python tasks.py worker`` (app.start()) with a broker it cannot use exits 2, as
    the command does: a supervisor sees the failure. A command that succeeds exits 0."""
    write, _start, _run = project
    write({"tasks.py": """
        import sys
        from miniq import Celery

        app = Celery("tasks", broker=sys.argv.pop())

        if __name__ == "__main__":
            app.start()
            print("after start")
    """})
    def script(*args):
        return subprocess.run([sys.executable, "tasks.py", *args], cwd=tmp_path, text=True,
                              env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                              timeout=60)
    failed = script("worker", "amqp://")
    assert failed.returncode == 2, failed.stderr
    assert "amqp://" in failed.stderr and "after start" not in failed.stdout
    broker = f"sqlite:///{tmp_path / 'tasks.db'}"
    subprocess.run([sys.executable, "-c", "import sys; from miniq import Celery;"
                    " Celery('x', broker=sys.argv[1]).send_task('x.y')", broker], check=True,
                   env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    purged = script("purge", "-f", broker)
    assert purged.returncode == 0, purged.stderr
    assert "Purged 1 message" in purged.stdout and "after start" in purged.stdout
    called = Celery("called", broker=broker, set_as_current=False)  # a command given in code:
    assert called.start(["result", "no-such-id"]) == 2  # its status, as Celery's start()


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_script_whose_app_is_named_as_no_module_runs_its_worker(project, tmp_path, method):
    """``python run.py`` with ``Celery("myapp")`` (or no name, or ``__name__``) and
    worker_main(): its tasks take the app's name, as Celery's, and its children know
    them, forked or spawned (a spawned child runs the script as ``__mp_main__``)."""
    write, _start, run = project
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), ROOT]))
    scripts, apps = [], (("run.py", '"myapp"'), ("bare.py", ""), ("named.py", "__name__"))
    for name, main in apps:
        write({name: f"""
            from miniq import Celery

            app = Celery({main})
            app.conf.broker_url = "sqlite:///{name}.db"
            app.conf.worker_start_method = "{method}"

            @app.task
            def add(x, y):
                return x + y

            if __name__ == "__main__":
                app.worker_main(["worker", "-c", "1", "-l", "INFO"])
        """})
        with open(tmp_path / f"{name}.log", "w") as log:  # python run.py: a script
            scripts.append(subprocess.Popen([sys.executable, name], cwd=tmp_path, env=env,
                                            stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True))
    try:
        for name, _ in apps:
            wait_for(lambda: "ready" in (tmp_path / f"{name}.log").read_text(), timeout=30,
                     message=f"the worker of {name}")
        assert run("""
            from miniq import Celery
            for main, name in (("myapp", "run.py"), ("__main__", "bare.py"),
                               ("__main__", "named.py")):
                app = Celery(main, broker=f"sqlite:///{name}.db")
                print(app.send_task(f"{main}.add", (2, 3)).get(timeout=20))
        """) == ["5", "5", "5"]
    finally:
        for script in scripts:
            os.killpg(script.pid, 9)
            script.wait(10)


PERIODIC = {
    "myapp.py": """
        from miniq import Celery

        app = Celery("myapp", broker="sqlite:///myapp.db")
        app.conf.timezone = "UTC"


        @app.task
        def say(what):
            print(what, flush=True)


        @app.on_after_configure.connect
        def setup_periodic_tasks(sender, **kwargs):
            sender.add_periodic_task(1.0, say.s("hello"), name="say hello every second")


        @app.on_after_finalize.connect
        def setup_more(sender, **kwargs):
            sender.add_periodic_task(1.0, say.s("bye"), name="say bye every second")


        if __name__ == "__main__":
            app.start()
    """,
}


def test_the_periodic_tasks_script_runs_its_schedule_through_app_start(project, tmp_path):
    write, _start, _run = project
    write(PERIODIC)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), ROOT]))
    log = open(tmp_path / "script.log", "w")
    script = subprocess.Popen([sys.executable, "myapp.py", "worker", "-B", "-l", "INFO"],
                              cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        said = lambda: (tmp_path / "script.log").read_text()  # noqa: E731
        wait_for(lambda: said().count("hello") >= 3 and said().count("bye") >= 3
                 or script.poll() is not None, timeout=30, message="three hellos and byes")
        assert script.poll() is None, (tmp_path / "script.log").read_text()
    finally:
        os.killpg(script.pid, 9)
        script.wait(10)
        log.close()


ROUTED_AT_CONFIGURE = {
    "routed.py": """
        from miniq import Celery

        app = Celery("routed", broker="sqlite:///routed.db")
        app.conf.task_default_queue = "default"


        @app.on_after_configure.connect
        def setup_routes(sender, **kwargs):
            sender.conf.task_routes = {"routed.heavy": {"queue": "heavy"}}


        @app.task
        def heavy():
            return "ran"
    """,
}


def test_a_process_that_only_sends_tasks_sends_on_after_configure_before_its_first_send(
        project):
    """As Celery's first read of the settings does: routes a receiver sets hold for what
    the process sends (the task went to the default queue, and never ran)."""
    write, start, run = project
    write(ROUTED_AT_CONFIGURE)
    start("-A", "routed", "worker", "-Q", "heavy", "-c", "1", "-l", "INFO")
    assert run("""
        from routed import heavy
        result = heavy.delay()
        print(result.get(timeout=30), result.queue)
    """) == ["ran", "heavy"]


DJANGO = {
    "proj/__init__.py": """
        from .celery import app as celery_app

        __all__ = ("celery_app",)
    """,
    "proj/settings.py": """
        INSTALLED_APPS = ["demoapp"]
        SECRET_KEY = "not used by the queue"
        CELERY_BROKER_URL = "sqlite:///proj.db"
        CELERY_RESULT_EXPIRES = 3600
        CELERY_TASK_ROUTES = {"demoapp.tasks.mul": {"queue": "math"}}
    """,
    "proj/celery.py": """
        import os

        from miniq import Celery

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
        app = Celery("proj")
        app.config_from_object("proj.settings", namespace="CELERY")
        app.autodiscover_tasks()


        @app.task(bind=True, ignore_result=True)
        def debug_task(self):
            print(f"Request: {self.request!r}")
    """,
    "demoapp/__init__.py": "",
    "demoapp/tasks.py": """
        from miniq import shared_task


        @shared_task
        def add(x, y):
            return x + y


        @shared_task
        def mul(x, y):
            return x * y


        @shared_task(bind=True, autoretry_for=(Exception,),
                     retry_kwargs={"max_retries": 2, "countdown": 0.1})
        def error_task(self):
            raise Exception(f"failed on try {self.request.retries}")
    """,
}


def test_a_django_style_project_runs_without_django(project):
    write, start, run = project
    write(DJANGO)
    start("-A", "proj", "worker", "-l", "INFO", "-Q", "celery,math")
    assert run("""
        import proj
        from demoapp.tasks import add, error_task, mul
        conf = proj.celery_app.conf
        print(conf.result_expires, conf.task_routes["demoapp.tasks.mul"]["queue"])
        print(add.delay(2, 3).get(timeout=20), mul.delay(6, 7).get(timeout=20))
        try:
            error_task.delay().get(timeout=20)
        except Exception as exc:
            print(type(exc).__name__, str(exc).replace(" ", "_"))
    """) == ["3600", "math", "5", "42", "Exception", "failed_on_try_2"]


SHARED_FIRST = {  # a library of shared tasks, imported before the project makes its apps
    "library.py": """
        from miniq import shared_task


        @shared_task
        def double(x):
            return 2 * x
    """,
    "early.py": """
        import library
        from miniq import Celery

        other = Celery("other", broker="sqlite:///other.db")
        app = Celery("early", broker="sqlite:///early.db")
    """,
}


def test_shared_tasks_defined_before_any_app_reach_every_app(project):
    write, start, run = project
    write(SHARED_FIRST)
    start("-A", "early", "worker", "-c", "1", "-l", "INFO")
    assert run("""
        import early, library
        print(library.double.delay(21).get(timeout=20))
        print(*("library.double" in a.tasks for a in (early.app, early.other)))
    """) == ["42", "True", "True"]


DJANGO_GUIDE = {  # Celery's "First steps with Django", the import swapped
    "djproj/__init__.py": """
        from .celery import app as celery_app

        __all__ = ("celery_app",)
    """,
    "djproj/celery.py": """
        import os

        from miniq import Celery

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djproj.settings")
        app = Celery("djproj")
        app.config_from_object("django.conf:settings", namespace="CELERY")
        app.autodiscover_tasks()
    """,
    "djproj/settings.py": """
        SECRET_KEY = "not a secret"
        INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth",
                          "shop.apps.ShopConfig"]
        DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "dj.sqlite3",
                                 "CONN_MAX_AGE": None}}  # kept open, were it not for the worker
        CELERY_BROKER_URL = "sqlite:///djq.db"
    """,
    "shop/__init__.py": "",
    "shop/extra.py": "",
    "shop/apps.py": """
        from django.apps import AppConfig

        class ShopConfig(AppConfig):
            name = "shop"
    """,
    "shop/tasks.py": """
        from django.contrib.auth.models import User  # a model: Django must be set up
        from django.db import connection

        from miniq import shared_task

        @shared_task
        def table():
            return User._meta.db_table

        connection.cursor().execute("SELECT 1")  # as it imports: the manager connects

        @shared_task
        def was_connected():
            before = connection.connection is not None
            connection.cursor().execute("SELECT 1")
            return before

        @shared_task
        def scratch_tables(make):
            with connection.cursor() as cursor:
                if make:
                    cursor.execute("CREATE TEMP TABLE scratch (x)")
                cursor.execute("SELECT COUNT(*) FROM sqlite_temp_master")
                return cursor.fetchone()[0]
    """,
}


def test_a_django_project_runs_as_celerys_does(project):
    """Django set up before the task modules, found through their app configs; as
    Celery 5.7's, each task starts with no connection (not its parent's, not the last
    task's, whatever CONN_MAX_AGE says); delay_on_commit."""
    pytest.importorskip("django")
    write, start, run = project
    write(DJANGO_GUIDE)
    start("-A", "djproj", "worker", "-c", "1", "-l", "INFO")
    assert run("""
        import django
        import djproj
        django.setup()
        from django.db import transaction
        from shop.tasks import scratch_tables, table, was_connected
        print(table.delay().get(timeout=20))
        print(was_connected.delay().get(timeout=20), was_connected.delay().get(timeout=20))
        print(scratch_tables.delay(True).get(timeout=20), scratch_tables.delay(False).get(timeout=20))
        with transaction.atomic():
            table.apply_async_on_commit(queue="later")
            print(djproj.celery_app.broker.purge(["later"], dry_run=True))
        print(djproj.celery_app.broker.purge(["later"], dry_run=True))
        from django.test.utils import override_settings
        from django.utils.translation import gettext_lazy
        with override_settings(TIME_ZONE="Asia/Tokyo"):  # as Celery's: read at each use
            print(djproj.celery_app.conf.timezone)
        from miniq.utils.json import dumps
        print(dumps([gettext_lazy("lazy")]))  # as kombu's: Django's lazy text is text
        from miniq.contrib.django.task import DjangoTask  # Celery's path to its class
        print(isinstance(table, DjangoTask))
        import sys  # found now through the app configs, as Celery's fixup finds them
        djproj.celery_app.autodiscover_tasks(related_name="extra", force=True)
        print("shop.extra" in sys.modules)
    """) == ["auth_user", "False", "False", "1", "0", "0", "1", "Asia/Tokyo", '["lazy"]', "True",
             "True"]


def test_the_worker_takes_over_logging_the_app_set_up_as_celerys_does(project, tmp_path):
    """worker_hijack_root_logger: the app's own basicConfig gives way to the worker's
    format, in the manager and its children; unless the app turns it off. -l's level
    holds either way, and the task loggers have their own handler, as Celery's."""
    write, start, run = project
    for hijack in (True, False):
        write({"loud.py": f"""
            import logging
            from miniq import Celery
            from miniq.utils.log import get_task_logger
            logging.basicConfig(format="OWN %(message)s", level=logging.DEBUG)
            app = Celery("loud", broker="sqlite:///loud_{hijack}.db")
            app.conf.worker_hijack_root_logger = {hijack}
            logger = get_task_logger(__name__)

            @app.task
            def hello():
                logger.info("hello at info")
                logging.getLogger("plain").info("plain at info")
                logging.getLogger("plain").debug("plain at debug")
                return 1
        """})
        worker = start("-A", "loud", "worker", "-c", "1", "-l", "INFO")
        assert run("import loud; print(loud.hello.delay().get(timeout=20))") == ["1"]
        worker.stop()
        assert ("OWN plain at info" in worker.output()) is not hijack, worker.output()
        assert ("] plain at info" in worker.output()) is hijack  # the worker's format
        assert "plain at debug" not in worker.output()  # as Celery's: at -l's level anyway
        assert "]: hello at info" in worker.output()  # the task loggers' own, in either case


@pytest.fixture
def fresh_app(tmp_path, monkeypatch):
    """A Celery app of its own; the default app of the other tests is kept."""
    saved = miniq.app._default
    monkeypatch.syspath_prepend(str(tmp_path))
    made = Celery("fresh", broker=f"sqlite:///{tmp_path / 'fresh.db'}")
    yield made
    miniq.app._default = saved
    miniq.project.APPS.discard(made)  # no later shared task is made on it


def test_a_shared_task_made_before_app_task_is_assigned_takes_the_new_class(fresh_app):
    from miniq import Task, project, shared_task
    kept = list(project.SHARED)
    try:
        @shared_task
        def early():
            return 1
        app = Celery("late", broker=fresh_app.conf.broker_url)

        class Contextual(Task):
            pass
        app.Task = Contextual  # as Flask's guide, after the app is made
        assert isinstance(early._get_current_object(), Contextual)
    finally:
        project.SHARED[:] = kept


@pytest.mark.parametrize("keyword", [{"loader": "default"}, {"autofinalize": False},
                                     {"fixups": []}, {"tasks": {}}, {"amqp": "x"}])
def test_celerys_parts_given_to_the_app_are_refused_not_taken_as_settings(fresh_app, keyword):
    with pytest.raises(TypeError, match=f"{next(iter(keyword))}.* is not supported"):
        Celery("parts", **keyword)
    assert Celery("parts", autofinalize=True).conf.get("autofinalize") is None


def test_config_from_envvar_and_finalize_as_celerys(fresh_app, tmp_path, monkeypatch):
    (tmp_path / "envconfig.py").write_text("task_default_queue = 'from-env'\n")
    monkeypatch.delenv("MINIQ_TEST_CONFIG", raising=False)
    assert fresh_app.config_from_envvar("MINIQ_TEST_CONFIG", silent=True) is False
    with pytest.raises(ImproperlyConfigured, match="MINIQ_TEST_CONFIG"):
        fresh_app.config_from_envvar("MINIQ_TEST_CONFIG")
    monkeypatch.setenv("MINIQ_TEST_CONFIG", "envconfig")
    assert fresh_app.config_from_envvar("MINIQ_TEST_CONFIG") is True
    assert fresh_app.conf.task_default_queue == "from-env"
    assert fresh_app.finalize() is None and fresh_app.finalized is True


def test_include_given_as_one_name_is_that_module(fresh_app, tmp_path):
    assert Celery("one", include="proj.tasks").conf.include == ["proj.tasks"]
    # As Celery's: set as settings, one name is that module too, imports first
    for name in ("listed_first", "listed_second"):
        (tmp_path / f"{name}.py").write_text("import time\nAT = time.perf_counter_ns()\n")
    fresh_app.conf.update(imports="listed_first", include="listed_second")
    try:
        fresh_app.import_includes()
        assert sys.modules["listed_first"].AT < sys.modules["listed_second"].AT
    finally:
        sys.modules.pop("listed_first", None), sys.modules.pop("listed_second", None)


def test_content_taken_beside_json_is_accepted_as_only_json_ever_arrives(fresh_app):
    """Older projects accept pickle too, and send JSON: as on Celery, nothing changes."""
    accepted = {"accept_content": ["json", "pickle"], "result_accept_content": ("pickle",
                                                                                 "json")}
    fresh_app.config_from_object(accepted)
    fresh_app.conf.update(accepted)
    fresh_app.import_includes()
    assert fresh_app.conf.accept_content == ["json", "pickle"]


@pytest.mark.parametrize("setting, value", [
    ("task_serializer", "pickle"), ("accept_content", ["pickle"]),
    ("result_serializer", "yaml"), ("task_annotations", "proj.annotations.Annotate"),
    ("task_create_missing_queues", False), ("task_allow_error_cb_on_chord_header", True),
    ("task_store_eager_result", True), ("enable_utc", False), ("worker_pool", "threads"),
    ("worker_pool", ["prefork"]), ("task_retry_on_worker_lost", True),
    ("result_failure_expires", 60),
    ("broker_transport_options", {"queue_order_strategy": "priority"}),
    ("beat_scheduler", "django_celery_beat.schedulers:DatabaseScheduler"),
    ("worker_soft_shutdown_timeout", 10), ("worker_enable_remote_control", False),
    ("task_remote_tracebacks", True), ("task_protocol", 1), ("worker_timer", "my.Timer"),
    ("worker_consumer", "my.Consumer"), ("worker_autoscaler", "my.Autoscaler")])
def test_settings_miniq_cannot_honour_are_refused_not_ignored(fresh_app, setting, value):
    with pytest.raises(ImproperlyConfigured, match=setting):
        fresh_app.config_from_object({setting: value})
    with pytest.raises(ImproperlyConfigured, match=setting):
        fresh_app.conf[setting] = value  # by hand: annotations apply, and are refused, at once
        fresh_app.import_includes()  # the others when a worker loads the app


def test_a_broadcast_queue_is_refused_where_its_tasks_would_wait_for_ever(fresh_app):
    """kombu's Broadcast gives each worker a copy of a task: miniq gives it to one."""
    common = pytest.importorskip("kombu.common")
    queues = (common.Queue("celery"), common.Broadcast("broadcast_tasks"))
    with pytest.raises(ImproperlyConfigured, match="broadcast queue"):
        fresh_app.conf.task_queues = queues
    with pytest.raises(ImproperlyConfigured, match="broadcast queue"):
        fresh_app.config_from_object({"task_queues": queues})


def test_celery_3s_names_of_celery_57s_settings_are_read_and_refused_as_theirs(fresh_app):
    fresh_app.config_from_object({"CELERY_ACKS_ON_TIMEOUT": False,
                                  "CELERYD_POOL_START_METHOD": "spawn"})
    assert (fresh_app.conf.task_acks_on_timeout, fresh_app.conf.worker_pool_start_method) == (
        False, "spawn")
    with pytest.raises(ImproperlyConfigured, match="task_retry_on_worker_lost"):
        fresh_app.config_from_object({"CELERY_RETRY_ON_WORKER_LOST": True})


def test_the_app_a_command_loads_is_the_current_one(broker_url, start_worker):
    saved = miniq.app._default
    try:
        loaded = miniq.app.load_app("tests.two_apps")
        assert miniq.app.default_app() is loaded and loaded.main == "two_apps"
        start_worker("-c", "1", app_path="tests.two_apps")
        assert loaded.tasks["tests.two_apps.current_name"].delay().get(timeout=30) == "two_apps"
    finally:
        miniq.app._default = saved


def test_settings_come_from_the_module_celery_config_module_names(tmp_path, monkeypatch):
    """As Celery's loader (which its --config sets): for an app given no settings."""
    (tmp_path / "cfg_from_env.py").write_text("task_default_queue = 'fromcfg'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CELERY_CONFIG_MODULE", "cfg_from_env")
    made = Celery("env", broker=f"sqlite:///{tmp_path / 'env.db'}", set_as_current=False)
    assert made.conf.task_default_queue == "fromcfg"


def test_json_by_any_of_its_names_is_taken_as_celerys_defaults(fresh_app):
    fresh_app.config_from_object({"accept_content": {"application/json"}, "enable_utc": True,
                                  "result_accept_content": None, "task_serializer": "json",
                                  "worker_pool": "processes",  # Celery's other names of these
                                  "beat_scheduler": "celery.beat.PersistentScheduler"})
    fresh_app.import_includes()


def test_each_autodiscover_tasks_call_is_imported_as_celerys(fresh_app, tmp_path, monkeypatch):
    (tmp_path / "found").mkdir()
    for module in ("__init__", "tasks", "jobs"):
        (tmp_path / "found" / f"{module}.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    fresh_app.autodiscover_tasks(lambda: ["found"])
    fresh_app.autodiscover_tasks(["found"], related_name="jobs")
    assert "found.tasks" not in sys.modules  # not before a worker loads the app
    try:
        fresh_app.import_includes()
        assert {"found.tasks", "found.jobs"} <= set(sys.modules)
    finally:
        for name in ("found", "found.tasks", "found.jobs"):
            sys.modules.pop(name, None)


def test_imports_and_namespaced_settings_are_taken(fresh_app, tmp_path):
    (tmp_path / "settings_mod.py").write_text(
        "CELERY_IMPORTS = ['extra_tasks']\nCELERY_TASK_SERIALIZER = 'json'\nDEBUG = True\n")
    (tmp_path / "extra_tasks.py").write_text("LOADED = True\n")
    fresh_app.config_from_object("settings_mod", namespace="CELERY")
    assert fresh_app.conf.imports == ["extra_tasks"] and "debug" not in fresh_app.conf
    fresh_app.import_includes()
    assert sys.modules["extra_tasks"].LOADED


@pytest.fixture(params=["miniq", "celery"])
def make_app(request, tmp_path, monkeypatch):
    """Apps of one implementation, each with a broker of its kind: the same settings
    checks hold on Celery's."""
    saved = miniq.app._default
    monkeypatch.syspath_prepend(str(tmp_path))
    impl = importlib.import_module(request.param) if request.param == "miniq" else (
        pytest.importorskip("celery"))
    url = "memory://" if request.param == "celery" else f"sqlite:///{tmp_path / 'c.db'}"
    made = []
    yield lambda *args, **kwargs: made.append(impl.Celery("c", *args, broker=url, **kwargs)) \
        or made[-1]
    miniq.app._default = saved
    miniq.project.APPS.difference_update(made)  # no later shared task is made on them


def celery_before(app, version):
    """Whether app is Celery's, older than version: a behaviour came with that version."""
    if not type(app).__module__.startswith("celery"):
        return False
    return tuple(map(int, importlib.import_module("celery").__version__.split(".")[:2])) < version


def test_results_pickle_and_print_as_celerys(make_app):
    """Unpickled, a result reads through the current app; one without an id is refused."""
    app = make_app()
    results = importlib.import_module(type(app).__module__.split(".")[0] + ".result")
    one = app.AsyncResult("a")
    made = [one, results.GroupResult("g", [one, app.AsyncResult("b")])]
    back = [pickle.loads(pickle.dumps(result)) for result in made]
    assert [repr(result) for result in back] == ["<AsyncResult: a>", "<GroupResult: g [a, b]>"]
    assert back == made and back[0].app is app
    assert repr(results.ResultSet([one])) == "<ResultSet: [a]>"
    with pytest.raises(ValueError, match="AsyncResult requires valid id"):
        app.AsyncResult(None)


def test_celerys_paths_of_the_task_control_and_log_modules_import(make_app):
    impl = type(make_app()).__module__.split(".")[0]  # from celery.app.task import Task
    assert importlib.import_module(f"{impl}.app.task").Task is importlib.import_module(impl).Task
    control = importlib.import_module(f"{impl}.app.control")
    assert control.Inspect and control.Control
    assert importlib.import_module(f"{impl}.app").task.Task  # import celery.app.task; its path
    formatter = importlib.import_module(f"{impl}.app.log").TaskFormatter(  # Celery's recipe
        "%(task_name)s[%(task_id)s]: %(message)s")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hi", None, None)
    assert formatter.format(record) == "???[???]: hi"  # outside a task


def test_retry_and_time_limit_errors_read_as_celerys(make_app):
    exceptions = importlib.import_module(type(make_app()).__module__.split(".")[0] + ".exceptions")
    eta = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    texts = [str(exceptions.Retry(when=1)), str(exceptions.Retry(exc=KeyError("k"), when=2.5)),
             str(exceptions.Retry(when=eta)), str(exceptions.Retry("own words", when=1)),
             str(exceptions.SoftTimeLimitExceeded()), str(exceptions.TimeLimitExceeded(5.0))]
    assert texts == ["Retry in 1s", "Retry in 2.5s: KeyError('k')",
                     "Retry at 2030-01-02 03:04:05+00:00", "own words",
                     "SoftTimeLimitExceeded()", "TimeLimitExceeded(5.0,)"]


def test_old_setting_names_are_read_as_celery_maps_them(make_app):
    """Celery 3's capital names: from an object, under a namespace, by update() and
    by assignment; mixed with new names in one object, refused as Celery's are."""
    class Old:
        CELERY_ALWAYS_EAGER = True
        CELERYD_CONCURRENCY = 3
        CELERY_DEFAULT_QUEUE = "dq"
        CELERY_ROUTES = {"c.add": {"queue": "math"}}
        CELERYBEAT_SCHEDULE = {"x": {"task": "c.add", "schedule": 10.0}}
        CELERY_TASK_RESULT_EXPIRES = 60
        CELERY_REDIRECT_STDOUTS = False
        CELERYD_HIJACK_ROOT_LOGGER = False
        DEBUG = True
    for namespace in (None, "CELERY"):
        app = make_app()
        if namespace and celery_before(app, (5, 7)):
            continue  # 5.6 reads none of them under a namespace
        app.config_from_object(Old, namespace=namespace)
        conf = app.conf
        assert (conf.task_always_eager, conf.worker_concurrency, conf.task_default_queue,
                conf.task_routes, list(conf.beat_schedule), conf.result_expires,
                conf.worker_redirect_stdouts, conf.worker_hijack_root_logger) == (
            True, 3, "dq", {"c.add": {"queue": "math"}}, ["x"], 60, False, False), namespace
    app = make_app()
    app.conf.update(CELERY_ALWAYS_EAGER=True)
    app.conf.CELERYD_PREFETCH_MULTIPLIER = 2
    assert (app.conf.task_always_eager, app.conf.worker_prefetch_multiplier) == (True, 2)
    # read by an old name too, as Celery's: get(), [], in
    assert (app.conf.get("CELERY_ALWAYS_EAGER"), app.conf["CELERYD_PREFETCH_MULTIPLIER"],
            "CELERY_DEFAULT_QUEUE" in app.conf, app.conf.get("NO_SUCH_NAME", 7)) == (True, 2, True, 7)

    class Mixed:
        CELERY_ALWAYS_EAGER = True
        task_default_queue = "newq"
    app = make_app()
    with pytest.raises(Exception, match="CELERY_ALWAYS_EAGER +-> task_always_eager") as caught:
        app.config_from_object(Mixed)
        app.conf.task_always_eager  # noqa: B018 - Celery reads its source on first use
    assert type(caught.value).__name__ == "ImproperlyConfigured"
    app = make_app()  # an old name beside its own new one is no mix: the new one holds
    app.config_from_object({"task_always_eager": False, "CELERY_ALWAYS_EAGER": True,
                            "result_expires": 5, "CELERY_TASK_RESULT_EXPIRES": 60})
    assert (app.conf.task_always_eager, app.conf.result_expires) == (False, 5)
    old = {"CELERY_ALWAYS_EAGER": True, "CELERY_TASK_RESULT_EXPIRES": 60}
    app = make_app()  # the names are read as the kind most of them are: here Celery 3's
    app.config_from_object({**old, "result_expires": 5})  # with its old one: no mix
    assert (app.conf.task_always_eager, app.conf.result_expires) == (True, 5)
    app = make_app()
    with pytest.raises(Exception, match="task_default_queue +-> CELERY_DEFAULT_QUEUE"):
        app.config_from_object({**old, "task_default_queue": "q"})
        app.conf.task_always_eager  # noqa: B018
    app = make_app()  # under a namespace: its name there, the plain new one, then Celery 3's
    app.config_from_object({"task_default_queue": "plain", "CELERY_DEFAULT_QUEUE": "old",
                            "result_expires": 5, "CELERY_TASK_RESULT_EXPIRES": 60,
                            "CELERY_TASK_ACKS_LATE": True, "task_acks_late": False},
                           namespace="CELERY")
    assert (app.conf.task_default_queue, app.conf.result_expires, app.conf.task_acks_late) \
        == ("plain", 5, True)


def test_a_task_class_and_annotations_set_later_hold_for_tasks_made_before(make_app):
    app = make_app()

    @app.task(name="early")
    def early(x):
        return x

    class ContextTask(app.Task):  # as Flask's guide has it
        def __call__(self, *args, **kwargs):
            return ["wrapped", super().__call__(*args, **kwargs)]
    app.Task = ContextTask
    app.conf.task_annotations = {"early": {"max_retries": 44, "ignore_result": True}}
    assert (early(1), isinstance(early, ContextTask)) == (["wrapped", 1], True)
    assert (early.max_retries, early.ignore_result) == (44, True)


def test_options_a_task_does_not_set_read_as_app_conf_as_celerys(make_app):
    app = make_app(task_ignore_result=True, task_acks_late=True, task_time_limit=30,
                   task_default_rate_limit="5/s")

    @app.task(name="conf_read")
    def conf_read():
        return None

    @app.task(name="own", ignore_result=False, time_limit=5)
    def own():
        return None
    assert (conf_read.ignore_result, conf_read.acks_late, conf_read.time_limit,
            conf_read.rate_limit, conf_read.track_started, conf_read.serializer,
            conf_read.store_errors_even_if_ignored) == (
        True, True, None if celery_before(app, (5, 7)) else 30, "5/s", False, "json", False)
    assert (own.ignore_result, own.time_limit) == (False, 5)


def test_a_calls_own_time_limit_is_checked_against_the_tasks_own_only(make_app):
    app = make_app(task_soft_time_limit=10)

    @app.task(name="limited")
    def limited():
        return None
    assert limited.apply_async(time_limit=5).id  # as Celery's: conf's soft limit is no bar


def test_a_copy_of_conf_is_the_settings_alone(fresh_app):
    snapshot = copy.copy(fresh_app.conf)
    assert pickle.loads(pickle.dumps(fresh_app.conf)) == snapshot == fresh_app.conf
    fresh_app.config_from_object({"task_default_queue": "read"})  # the copy set nothing
    assert (fresh_app.conf.task_default_queue, snapshot.task_default_queue) == ("read", "celery")


def test_what_code_sets_stays_over_config_from_object(make_app, monkeypatch):
    app = make_app(task_default_priority=4)
    app.conf.update(task_default_queue="updated")
    app.conf.task_default_rate_limit = "5/s"
    app.config_from_object({"task_default_queue": "read", "task_default_rate_limit": "1/s",
                            "task_default_priority": 1, "task_acks_late": True})
    assert (app.conf.task_default_queue, app.conf.task_default_rate_limit,
            app.conf.task_default_priority, app.conf.task_acks_late) == ("updated", "5/s", 4, True)


def test_the_default_exchange_and_routing_key_read_as_celerys(make_app):
    """Read as attributes, they are the default queue's name where unset, as Celery's."""
    app = make_app(task_default_queue="main")
    assert (app.conf.task_default_exchange, app.conf.task_default_routing_key,
            app.conf.get("task_default_routing_key")) == ("main", "main", None)
    app.conf.task_default_routing_key = "key"
    assert app.conf.task_default_routing_key == "key"


def test_a_settings_object_is_read_at_each_use_as_celerys(make_app, tmp_path):
    """A change to the object config_from_object read holds at once, as in Celery, which
    reads it at each use; what code set stays over it."""
    (tmp_path / "live_settings.py").write_text(
        "CELERY_TASK_DEFAULT_QUEUE = 'first'\nCELERY_WORKER_POOL_START_METHOD = 'spawn'\n"
        "CELERY_PROJECT_OWN = 42\nCELERY_DEFAULT_EXCHANGE = 'old'\n")
    sys.modules.pop("live_settings", None)  # each implementation's run reads its own
    app = make_app()
    app.config_from_object("live_settings", namespace="CELERY")
    app.conf.task_default_priority = 3
    assert app.conf.task_default_queue == "first"
    assert (app.conf.worker_pool_start_method, app.conf.project_own,
            app.conf.task_default_exchange) == (  # 5.6 reads no Celery 3 name there
        "spawn", 42, "first" if celery_before(app, (5, 7)) else "old")
    module = sys.modules["live_settings"]
    del module.CELERY_PROJECT_OWN
    assert "project_own" not in app.conf and app.conf.get("project_own") is None
    module.CELERY_TASK_DEFAULT_QUEUE, module.CELERY_TASK_DEFAULT_PRIORITY = "second", 9
    module.CELERY_TASK_ACKS_LATE = True
    assert (app.conf.task_default_queue, app.conf.task_default_priority,
            app.conf.task_acks_late) == (  # 5.6 reads the object's over what code set
        "second", 9 if celery_before(app, (5, 7)) else 3, True)
    del module.CELERY_TASK_ACKS_LATE, module.CELERY_TASK_DEFAULT_QUEUE
    assert (app.conf.task_acks_late, app.conf.task_default_queue) == (False, "celery")
    settings = {"task_ignore_result": False}
    app.config_from_object(settings)
    settings["task_ignore_result"] = True
    assert app.conf.task_ignore_result and app.conf.get("task_ignore_result")
    assert app.conf.get("worker_pool_start_method") != "spawn"  # the module is read no more


def test_a_config_source_is_read_at_each_use_as_celerys(make_app):
    settings = {}
    app = make_app(config_source=settings)
    settings["task_default_queue"] = "later"
    assert app.conf.task_default_queue == "later"
    del settings["task_default_queue"]
    assert app.conf.task_default_queue == "celery"


def test_celery_broker_url_in_the_environment_is_the_broker(make_app, monkeypatch, tmp_path):
    monkeypatch.setenv("CELERY_BROKER_URL", f"sqlite:///{tmp_path / 'env.db'}")
    app = make_app()
    app.config_from_object({"broker_url": "sqlite:///other.db"})
    assert app.conf.broker_url == f"sqlite:///{tmp_path / 'env.db'}"
    app.conf.update(broker_url="sqlite:///code.db")  # set by code later: the environment's
    app.conf.broker_url = "sqlite:///code.db"
    assert app.conf.broker_url == f"sqlite:///{tmp_path / 'env.db'}"


@pytest.mark.parametrize("impl", ["miniq", "celery"])
def test_djangos_override_settings_holds_as_celerys(impl, tmp_path):
    """A test's override_settings (pytest-django's settings fixture too) holds at once, and
    ends with its block; so does an assignment to the settings, which sends no signal."""
    pytest.importorskip(impl)
    pytest.importorskip("django")
    write(tmp_path, {"djsettings.py": f"""
        SECRET_KEY, INSTALLED_APPS = "x", []
        CELERY_BROKER_URL = {"'memory://'" if impl == "celery" else f"'sqlite:///{tmp_path}/d.db'"}
        """})
    script = f"""
        import django
        django.setup()
        from django.conf import settings
        from django.test import override_settings
        from {impl} import Celery
        app = Celery("dj")
        app.config_from_object("django.conf:settings", namespace="CELERY")

        @app.task
        def add(x, y):
            return x + y

        seen = [app.conf.task_always_eager]
        with override_settings(CELERY_TASK_ALWAYS_EAGER=True):
            seen += [app.conf.task_always_eager, type(add.delay(1, 2)).__name__]
        seen.append(app.conf.task_always_eager)
        settings.CELERY_TASK_EAGER_PROPAGATES = True  # assigned: no signal, read at use
        settings.CELERY_TASK_ALWAYS_EAGER = True
        seen += [type(add.delay(1, 2)).__name__, app.conf.task_eager_propagates]
        del settings.CELERY_TASK_ALWAYS_EAGER
        print(seen + [app.conf.task_always_eager])
        """
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="djsettings",
               PYTHONPATH=os.pathsep.join([str(tmp_path), ROOT]))
    env.pop("CELERY_BROKER_URL", None)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.split("\n")[0] == (
        "[False, True, 'EagerResult', False, 'EagerResult', True, False]"), done.stderr


@pytest.mark.parametrize("impl", ["miniq", "celery"])
def test_an_eager_failure_prints_nothing_where_logging_is_not_set_up(impl, tmp_path):
    """As Celery's: its loggers' lines are the program's to show (a NullHandler stops
    Python's last resort printing them)."""
    pytest.importorskip(impl)
    broker = "memory://" if impl == "celery" else f"sqlite:///{tmp_path}/q.db"
    script = f"""
        from {impl} import Celery
        app = Celery("quiet", broker={broker!r})
        app.conf.task_always_eager = True

        @app.task
        def boom():
            raise ValueError("boom")
        print(boom.delay().state)
        """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                          text=True, timeout=60)
    assert (done.stdout, done.stderr) == ("FAILURE\n", "")


def test_attributes_are_read_as_celery_reads_them(fresh_app):
    """An instance's class attributes are its settings, as in Celery."""
    class Settings:
        task_always_eager = True
    fresh_app.config_from_object(Settings())
    assert fresh_app.conf.task_always_eager


@pytest.mark.parametrize("backend, said", [
    ("redis://localhost:6379/0", "result backend 'redis://localhost:6379/0' is not supported"),
    ("db+sqlite:///results.sqlite", "'db[+]sqlite:///results.sqlite' is not supported: miniq"
                                    " keeps results in the broker's file: leave backend unset"),
    ("sqlite:///other.db", "leave backend unset, rpc:// or equal to broker")])
def test_a_result_backend_miniq_cannot_use_is_refused_naming_it(tmp_path, backend, said):
    app = Celery("b", broker=f"sqlite:///{tmp_path / 'b.db'}", backend=backend,
                 set_as_current=False)
    with pytest.raises(ImproperlyConfigured, match=said):
        app.broker  # noqa: B018 - the file is opened, and the backend checked, on first use


def test_settings_objects_are_read_as_celery_reads_them(fresh_app, tmp_path):
    """A property that raises is not a setting; a project's own capital constants beside
    new names are not Celery 3's; a namespace given to the app reads its config_source."""
    class Settings:
        task_default_queue = "mine"
        CELERY_WORKER_QUEUES = ["not", "celery's"]

        @property
        def secret_token(self):
            raise RuntimeError("not a setting")
    fresh_app.config_from_object(Settings())
    assert fresh_app.conf.task_default_queue == "mine" and "secret_token" not in fresh_app.conf
    (tmp_path / "dj_settings.py").write_text(
        "CELERY_TASK_DEFAULT_QUEUE = 'dj'\nCELERY_RESULT_BACKEND = 'rpc://'\n"
        "def main():\n    pass\nbroker = 'not a setting'\n")
    (tmp_path / "custom_task.py").write_text("from miniq import Task\nclass Custom(Task): pass\n")
    app = Celery("ns", broker=fresh_app.conf.broker_url, config_source="dj_settings",
                 namespace="CELERY", changes={"task_cls": "custom_task.Custom"},
                 set_as_current=False)
    assert (app.conf.task_default_queue, app.conf.result_backend) == ("dj", "rpc://")
    assert app.conf.broker_url == fresh_app.conf.broker_url
    assert app.Task.__name__ == "Custom"  # named "module.Class" too, as Celery's


def test_an_app_subclass_finds_its_database_beside_its_own_module(fresh_app, tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "projapp.py").write_text(
        "from miniq import Celery\nclass ProjApp(Celery):\n"
        "    def __init__(self):\n        super().__init__('p', broker='sqlite:///p.db')\n")
    sys.path.insert(0, str(tmp_path / "lib"))
    try:
        from projapp import ProjApp
        assert ProjApp().home == str(tmp_path / "lib")  # as a worker given -A projapp
    finally:
        sys.path.remove(str(tmp_path / "lib"))


def test_celerys_keywords_to_the_app_are_honoured(fresh_app, tmp_path):
    (tmp_path / "source_settings.py").write_text(
        "task_default_queue = 'from_source'\ntask_default_priority = 1\n")
    (tmp_path / "custom_task.py").write_text("from miniq import Task\nclass Custom(Task): pass\n")
    app = Celery("kw", broker=fresh_app.conf.broker_url, config_source="source_settings",
                 changes={"task_default_priority": 2}, set_as_current=False,
                 strict_typing=False, task_cls="custom_task:Custom")
    assert (app.conf.task_default_queue, app.conf.task_default_priority) == ("from_source", 2)
    assert miniq.current_app.main == "fresh"  # still the app made before

    @app.task
    def one(x):
        return x
    assert type(one).__mro__[1].__name__ == "Custom"
    assert one.apply_async((1, 2)).state == "PENDING"  # not checked: typing is off


FLASK_STYLE = {  # Flask's guide assigns app.Task; Celery's guide registers class-based tasks
    "flaskish.py": """
        from miniq import Celery, Task, current_app, shared_task

        other = Celery("other", broker="sqlite:///other.db")
        app = Celery("flaskish", broker="sqlite:///flaskish.db")


        class ContextTask(app.Task):
            def __call__(self, *args, **kwargs):
                return ["in context", self.run(*args, **kwargs)]


        app.Task = ContextTask


        @app.task
        def add(x, y):
            return x + y


        class Multiply(Task):
            name = "flaskish.multiply"

            def run(self, x, y):
                return x * y


        multiply = app.register_task(Multiply())


        class Unnamed(Task):
            def run(self):
                return self.request.id is not None


        unnamed = app.register_task(Unnamed())
        app.set_default()


        @shared_task
        def which_app():
            return current_app.main
    """,
}


def test_register_task_takes_the_class_or_an_instance_as_celery(fresh_app):
    class Multiply(miniq.Task):
        name = "multiply"

        def run(self, x, y):
            return x * y
    made = fresh_app.register_task(Multiply)  # as Celery's registry: made
    assert isinstance(made, Multiply) and fresh_app.tasks["multiply"] is made
    assert type(made).__name__ == "Multiply" and made.apply((6, 7)).get() == 42
    assert fresh_app.register_task(Multiply()).apply((6, 7)).get() == 42
    sent = Multiply().delay(2, 5)  # as Celery's bound class: a fresh instance sends too
    assert Multiply()(2, 3) == 6
    assert (sent.name, sent.args) == ("multiply", [2, 5])
    with pytest.raises(TypeError, match="multiply: missing a required argument: 'y'"):
        Multiply().delay(2)


def test_a_base_that_names_its_subclasses_names_the_registered_task(fresh_app):
    """register_task makes a class of the task's own: a base's __init_subclass__ that sets
    its name (a common auto-naming base) runs for it too, and must not rename the task."""
    class Named(miniq.Task):
        def __init_subclass__(cls, **kwargs):
            super().__init_subclass__(**kwargs)
            cls.name = f"{cls.__module__}.{cls.__name__}"

    class Add(Named):
        def run(self, x, y):
            return x + y
    task = fresh_app.register_task(Add())
    assert task.name == f"{__name__}.Add" and fresh_app.tasks[task.name] is task
    assert task.delay(1, 2).name == task.name


def test_tasks_and_signatures_pickle_as_celerys(tmp_path, monkeypatch, fresh_app):
    """A task pickles by name and comes back as the current app's; a signature as its
    dict; a shared task is a Task to isinstance and prints as its task."""
    monkeypatch.setattr(miniq.project, "SHARED", list(miniq.project.SHARED))  # none made later
    (tmp_path / "picked.py").write_text(textwrap.dedent("""
        from miniq import current_app, shared_task

        @current_app.task
        def add(x, y):
            return x + y

        @shared_task
        def mul(x, y):
            return x * y
    """))
    picked = importlib.import_module("picked")
    assert pickle.loads(pickle.dumps(picked.add)) is picked.add
    assert pickle.loads(pickle.dumps(picked.mul)) is fresh_app.tasks["picked.mul"]
    assert isinstance(picked.mul, miniq.Task) and repr(picked.mul) == repr(picked.add).replace(
        "picked.add ", "picked.mul ")  # not in the app's address: 0x...add0 is one
    sent = picked.add.s(2, 3) | picked.add.s(4)
    assert len(pickle.dumps(sent)) < 1000  # no app in it
    back = pickle.loads(pickle.dumps(sent))
    assert back == sent and type(back) is type(sent) and back.apply().get() == 9


def test_app_task_register_task_and_set_default_as_celery(project):
    write_files, start, run = project
    write_files(FLASK_STYLE)
    start("-A", "flaskish", "worker", "-c", "1", "-l", "INFO")
    assert run("""
        import flaskish as f
        print(f.add.delay(2, 3).get(timeout=20), f.multiply.delay(6, 7).get(timeout=20))
        print(f.unnamed.name, f.unnamed.delay().get(timeout=20), f.which_app.delay().get(timeout=20))
        print(f.current_app.main, f.app.Task is f.ContextTask, isinstance(f.add, f.ContextTask))
        try:
            f.multiply.delay(6)
        except TypeError:
            print("checked")
    """) == ["['in", "context',", "5]", "42",
             "flaskish.Unnamed", "True", "['in", "context',", "'flaskish']",  # app.Task's too
             "flaskish", "True", "True", "checked"]


def test_get_inside_an_eager_run_that_delay_sent_is_refused_as_celerys(make_app):
    """As in a worker: a task that waits for another's result fails, unless it says
    disable_sync_subtasks=False; apply() alone refuses nothing, as Celery's."""
    app = make_app(task_always_eager=True)

    @app.task
    def add(x, y):
        return x + y

    @app.task
    def waits():
        return add.delay(1, 2).get()

    @app.task
    def waits_knowingly():
        return add.delay(1, 2).get(disable_sync_subtasks=False)

    @app.task
    def total(numbers):
        return sum(numbers)

    @app.task
    def sends_workflows():  # as Celery's, their steps may wait for each other
        impl = importlib.import_module(type(app).__module__.split(".")[0])
        return [impl.chain(add.s(1, 1), add.s(2)).delay().get(disable_sync_subtasks=False),
                impl.chord([add.s(1, 1), add.s(2, 2)], total.s()).delay().result]

    refused = waits.delay()
    assert (refused.state, type(refused.result)) == ("FAILURE", RuntimeError)
    assert "Never call result.get() within a task" in str(refused.result)
    assert waits.apply().get() == 3 and waits_knowingly.delay().get() == 3
    assert list(sends_workflows.delay().get()) == [4, 6]


def test_a_revoked_eager_result_reads_as_celery_57s(make_app):
    app = make_app(task_always_eager=True)

    @app.task
    def add(x, y):
        return x + y

    result = add.delay(1, 2)
    result.revoke()
    if celery_before(app, (5, 7)):
        return  # 5.6 kept the value
    assert (result.state, result.traceback, result.ready()) == ("REVOKED", None, True)
    with pytest.raises(Exception, match="revoked") as caught:
        result.get()
    assert type(caught.value).__name__ == "TaskRevokedError"
    assert type(result.get(propagate=False)) is type(caught.value) is type(result.result)


def test_an_eager_request_names_this_host_and_its_calls_options_as_celerys(make_app):
    app = make_app(task_always_eager=True)

    @app.task(bind=True)
    def fields(self):
        return self.request.hostname, self.request.timelimit, self.request.ignore_result

    @app.task(bind=True, time_limit=5)
    def limited(self):
        return self.request.timelimit

    assert list(fields.delay().get()) == [socket.gethostname(), None, False]
    assert list(fields.apply_async(ignore_result=True).get())[2] is True
    if not celery_before(app, (5, 7)):  # 5.6 gave an eager run no time limits
        assert list(limited.delay().get()) == [5, None]


def test_a_request_updates_and_clears_as_celerys_context(make_app):
    app = make_app(task_always_eager=True)

    @app.task(bind=True)
    def noted(self):
        self.request.update({"tenant": "a"}, user="b")
        seen = self.request.tenant, self.request.user
        self.request.clear()
        return [*seen, self.request.id]  # the class default, once cleared

    assert noted.delay().get() == ["a", "b", None]


def test_send_task_under_always_eager_sends_and_warns_as_celerys(make_app):
    app = make_app(task_always_eager=True)
    exceptions = importlib.import_module(type(app).__module__.split(".")[0] + ".exceptions")
    with pytest.warns(exceptions.AlwaysEagerIgnored, match="no effect on send_task"):
        result = app.send_task("c.elsewhere", (1,))
    assert type(result).__name__ == "AsyncResult"  # sent, not run here


def test_an_eager_chord_with_a_chain_body_keeps_its_parents_as_celerys(make_app):
    app = make_app(task_always_eager=True)
    impl = importlib.import_module(type(app).__module__.split(".")[0])

    @app.task
    def add(x, y):
        return x + y

    @app.task
    def total(numbers):
        return sum(numbers)

    result = impl.chord([add.s(1, 1), add.s(2, 2)], total.s() | add.s(10) | add.s(100)).delay()
    line = []
    while result is not None:
        line.append(result.get())
        result = result.parent
    assert line == [116, 16, 6]


def test_a_chord_refuses_errbacks_on_its_header_set_after_configuring(fresh_app):
    add = fresh_app.task(name="t.add")(lambda x, y: x + y)
    for set_it in (lambda: setattr(fresh_app.conf, "task_allow_error_cb_on_chord_header", 1),
                   lambda: fresh_app.conf.update(task_allow_error_cb_on_chord_header=True),
                   lambda: Celery("other", task_allow_error_cb_on_chord_header=True)):
        with pytest.raises(ImproperlyConfigured, match="task_allow_error_cb_on_chord_header"):
            set_it()  # as code sets it
    dict.__setitem__(fresh_app.conf, "task_allow_error_cb_on_chord_header", True)  # behind it
    one = chord([add.s(1, 1)], add.s(1))
    for form in (one, group(add.s(1, 1), add.s(2, 2)) | add.s(1), chain(add.s(1, 1), one),
                 group(one, add.s(1, 1))):  # however a chord is sent
        with pytest.raises(ImproperlyConfigured, match="task_allow_error_cb_on_chord_header"):
            form.apply_async()
    assert fresh_app.broker.db.execute("SELECT COUNT(*) FROM task").fetchone()[0] == 0


def test_a_second_function_under_a_taken_task_name_is_warned_of_not_registered(fresh_app):
    import warnings

    from miniq.exceptions import DuplicateTaskNameWarning
    first = fresh_app.task(name="t.same")(lambda: 1)
    with pytest.warns(DuplicateTaskNameWarning, match="t.same"):
        second = fresh_app.task(name="t.same")(lambda: 2)
    assert second is first and fresh_app.tasks["t.same"]() == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same function again (a module imported twice)
        assert fresh_app.task(name="t.same")(first.__wrapped__) is first


def test_celery_s_machinery_on_the_app_is_named_as_such(fresh_app):
    """app.amqp, app.backend and the like: an AttributeError (hasattr() is False, as code
    that probes for them expects) that says what it is and where miniq keeps it."""
    for name in ("amqp", "backend", "loader", "pool", "connection_for_write", "steps"):
        assert not hasattr(fresh_app, name)
        with pytest.raises(AttributeError, match=f"app.{name} is Celery's .*app.broker"):
            getattr(fresh_app, name)
    with pytest.raises(AttributeError, match="object has no attribute 'nothing'"):
        fresh_app.nothing  # noqa: B018 - any other name: Python's own error


def test_shutdown_gives_replies_only_when_asked_as_celerys(make_app):
    assert make_app().control.shutdown() is None


def test_the_task_registry_registers_a_class_based_task_as_celerys(make_app):
    app = make_app()
    exceptions = importlib.import_module(type(app).__module__.split(".")[0] + ".exceptions")

    class Multiply(app.Task):
        name = "multiply"

        def run(self, x, y):
            return x * y

    class Unnamed(app.Task):
        def run(self):
            return None
    assert app.tasks.register(Multiply) is None  # as Celery's registry: made
    assert isinstance(app.tasks["multiply"], Multiply)
    assert app.tasks["multiply"].apply((6, 7)).get() == 42
    with pytest.raises(exceptions.InvalidTaskError, match="must specify .name attribute"):
        app.tasks.register(Unnamed)


def test_celerys_task_machinery_is_named_where_asked_for(fresh_app):
    task = fresh_app.task(lambda: None, name="plain")
    for name, said in [("backend", "result backend"), ("send_event", "event sender"),
                       ("signature_from_request", "signature of a request"),
                       ("add_to_chord", "way to grow a running chord")]:
        with pytest.raises(AttributeError, match=f"Task.{name} is Celery's {said}"):
            getattr(task, name)
    assert not hasattr(task, "backend") and getattr(task, "no_such", 1) == 1


def test_an_apps_group_result_class_is_of_that_app_and_pickles_as_the_plain_one(fresh_app):
    from miniq.result import AsyncResult, GroupResult, ResultSet
    assert type(pickle.loads(pickle.dumps(fresh_app.AsyncResult("a")))) is AsyncResult
    made = fresh_app.GroupResult("gid", [fresh_app.AsyncResult("a")])
    members = fresh_app.ResultSet([fresh_app.AsyncResult("a")])
    assert made.app is fresh_app and members.app is fresh_app
    assert [type(pickle.loads(pickle.dumps(r))) for r in (made, members)] == [GroupResult,
                                                                             ResultSet]
    assert pickle.loads(pickle.dumps(made)) == made
    assert fresh_app.GroupResult.restore("never-saved", app=fresh_app) is None  # Celery's call


def test_celerys_other_control_commands_are_named_where_asked_for(fresh_app):
    with pytest.raises(AttributeError, match="app.control.rate_limit is a Celery remote"):
        fresh_app.control.rate_limit("tests.tasks.add", "10/m")
    with pytest.raises(AttributeError, match=r"app.control.inspect\(\).revoked is a Celery"):
        fresh_app.control.inspect().revoked()
    with pytest.raises(AttributeError, match="'Inspect' object has no attribute 'nothing'"):
        fresh_app.control.inspect().nothing  # noqa: B018
    assert not hasattr(fresh_app.control, "pool_grow") and fresh_app.control.ping


def test_celeryd_init_receivers_set_up_the_worker_as_celerys(project):
    """As Celery's, celeryd_init comes before the worker reads its settings: what its
    receivers put in app.conf (the queue, the concurrency) is what the worker serves
    with."""
    write, start, run = project
    write({"setup.py": """
        from miniq import Celery
        from miniq.signals import celeryd_init, worker_init

        app = Celery("setup", broker="sqlite:///setup.db")

        @celeryd_init.connect
        def configure(conf=None, **kwargs):
            conf.task_default_queue = "special"
            conf.worker_concurrency = 3

        @worker_init.connect
        def set_up(sender=None, **kwargs):  # as Celery's: once the worker is set up
            with open("set_up.txt", "w") as f:
                f.write(f"{sender.concurrency} {','.join(sender.queues)}")
            sender.app.conf.result_expires = 1  # still read after it, as Celery's backend

        @app.task
        def hello():
            return "hi"
    """})
    start("-A", "setup", "worker", "-l", "INFO")
    assert run("""
        import time
        from setup import app, hello
        sent = hello.apply_async(queue="special")
        print(sent.get(timeout=20))
        (stats,) = app.control.inspect(timeout=2).stats().values()
        (queues,) = app.control.inspect(timeout=2).active_queues().values()
        print(stats["pool"]["max-concurrency"], *[q["name"] for q in queues])
        print(open("set_up.txt").read())
        deadline = time.monotonic() + 20
        while app.AsyncResult(sent.id).state != "PENDING" and time.monotonic() < deadline:
            time.sleep(0.05)
        print(app.AsyncResult(sent.id).state)  # swept: its result expired after 1 s
    """) == ["hi", "3", "special", "3", "special", "PENDING"]


def test_a_start_up_receiver_that_meets_what_miniq_lacks_stops_the_worker(tmp_path):
    """Celery's guide adds a worker's own queue from celeryd_after_setup through app.amqp,
    which miniq has not: the worker stops with the receiver's error, where logging it and
    serving on would leave the queue unserved."""
    write(tmp_path, {"direct.py": """
        from miniq import Celery
        from miniq.signals import celeryd_after_setup

        app = Celery("direct", broker="sqlite:///direct.db")

        @celeryd_after_setup.connect
        def setup_direct_queue(sender, instance, **kwargs):
            instance.app.amqp.queues.select_add(f"{sender}.dq")
    """})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), ROOT]))
    worker = subprocess.Popen([sys.executable, "-m", "miniq", "-A", "direct", "worker"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = worker.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):  # a worker that served on: all of it
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    done = subprocess.CompletedProcess(worker.args, worker.returncode, "", stderr)
    assert done.returncode == 2
    assert ("celeryd_after_setup receiver setup_direct_queue: app.amqp is Celery's AMQP"
            in done.stderr.splitlines()[-1])
