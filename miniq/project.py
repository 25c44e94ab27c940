"""What a Celery project asks of its app beyond the core: settings under a
namespace, task autodiscovery, periodic tasks added in code, ``app.start()``,
``app.control.inspect()``, ``shared_task``, and rate limits (parsed here, kept
across workers by the broker). The ``Miniq`` (and ``Celery``) users import is
the core's app with these; the core never imports this module.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import os
import sys
import threading
import types
import weakref
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Callable

from . import app as apps
from . import canvas, control, fixups
from . import result as results
from . import task as tasks
from .control import Control
from .exceptions import ImproperlyConfigured
from .rates import RateBroker, admit
from .result import zone
from .task import Task, emit
from .utils import log as logs

# Celery's paths of these modules, as os.path is posixpath: from celery.app.task import Task
for _name, _module in (("task", tasks), ("control", control), ("log", logs)):
    sys.modules.setdefault(f"{apps.__name__}.{_name}", _module)
    setattr(apps, _name, _module)
del _name, _module
JSON = "miniq speaks JSON only"
MISSING = object()  # a name a settings object does not have
REFUSED = {  # settings miniq cannot honour: refused at configuration, never ignored
    "task_serializer": ("json", JSON), "result_serializer": ("json", JSON),
    "accept_content": (["json"], JSON), "result_accept_content": (["json"], JSON),
    # Celery's QueueNotFound needs declared queues
    "task_create_missing_queues": (True, "miniq serves any queue it is given"),
    "task_allow_error_cb_on_chord_header": (False, "a chord's errback is its callback's"),
    "task_store_eager_result": (False, "an eager run stores no result"),
    "enable_utc": (True, "miniq keeps times in UTC and shows them in app.conf.timezone;"
                   " Celery's other mode reads crontabs in the system's local time"),
    "worker_pool": ({"prefork", "processes"}, "miniq's children are processes (prefork)"),
    "task_retry_on_worker_lost": (False, "a task whose child dies fails, or runs again under"
                                  " acks_late and task_reject_on_worker_lost"),
    "result_failure_expires": (None, "failures expire with the other results"),
    "beat_scheduler": ({"celery.beat:PersistentScheduler", "celery.beat.PersistentScheduler"},
                       "miniq's beat sends beat_schedule, its runs kept in the database file"),
    "worker_soft_shutdown_timeout": (0, "a cold shutdown puts the running tasks back in"
                                     " the queue at once; a warm one lets them end"),
    "worker_enable_remote_control": (True, "miniq's workers always answer app.control"),
    "task_remote_tracebacks": (False, "get() raises the task's error with this process's"
                               " traceback; the worker's is AsyncResult.traceback"),
    "task_protocol": (2, "miniq's messages carry protocol 2's fields"),
    **{key: (None, "miniq's worker is its own") for key in ("worker_timer", "worker_agent")},
    "worker_consumer": ({"celery.worker.consumer:Consumer"}, "miniq's worker is its own"),
    "worker_autoscaler": ({"celery.worker.autoscale:Autoscaler"}, "miniq's pool is fixed"),
}
# Celery 3's names (all capitals in a config object) of the settings miniq reads, as
# Celery's table has them; no others (CELERY_TASK_ALWAYS_EAGER is none: Celery ignores it)
OLD_NAMES = {
    "broker_url": "broker_url", "celery_accept_content": "accept_content",
    "celery_acks_late": "task_acks_late", "celery_acks_on_timeout": "task_acks_on_timeout",
    "celery_retry_on_worker_lost": "task_retry_on_worker_lost",
    "celery_result_failure_expires": "result_failure_expires",
    "celery_acks_on_failure_or_timeout": "task_acks_on_failure_or_timeout",
    "celery_allow_error_cb_on_chord_header": "task_allow_error_cb_on_chord_header",
    "celery_always_eager": "task_always_eager", "celery_annotations": "task_annotations",
    "celery_create_missing_queues": "task_create_missing_queues",
    "celery_default_exchange": "task_default_exchange",
    "celery_default_exchange_type": "task_default_exchange_type",
    "celery_default_priority": "task_default_priority",
    "celery_default_queue": "task_default_queue",
    "celery_default_rate_limit": "task_default_rate_limit",
    "celery_default_routing_key": "task_default_routing_key",
    "celery_disable_rate_limits": "worker_disable_rate_limits",
    "celery_eager_propagates_exceptions": "task_eager_propagates",
    "celery_ignore_result": "task_ignore_result", "celery_imports": "imports",
    "celery_include": "include",
    "celery_inherit_parent_priority": "task_inherit_parent_priority",
    "celery_queues": "task_queues", "celery_redirect_stdouts": "worker_redirect_stdouts",
    "celery_redirect_stdouts_level": "worker_redirect_stdouts_level",
    "celery_reject_on_worker_lost": "task_reject_on_worker_lost",
    "celery_result_backend": "result_backend", "celery_result_extended": "result_extended",
    "celery_result_serializer": "result_serializer", "celery_routes": "task_routes",
    "celery_store_eager_result": "task_store_eager_result",
    "celery_store_errors_even_if_ignored": "task_store_errors_even_if_ignored",
    "celery_task_result_expires": "result_expires",
    "celery_task_serializer": "task_serializer", "celery_timezone": "timezone",
    "celery_track_started": "task_track_started",
    "celerybeat_cron_starting_deadline": "beat_cron_starting_deadline",
    "celerybeat_schedule": "beat_schedule", "celerybeat_scheduler": "beat_scheduler",
    "celeryd_concurrency": "worker_concurrency",
    "celeryd_pool_start_method": "worker_pool_start_method",
    "celeryd_disable_prefetch": "worker_disable_prefetch",
    "celeryd_hijack_root_logger": "worker_hijack_root_logger",
    "celeryd_log_format": "worker_log_format",
    "celeryd_max_memory_per_child": "worker_max_memory_per_child",
    "celeryd_max_tasks_per_child": "worker_max_tasks_per_child", "celeryd_pool": "worker_pool",
    "celeryd_prefetch_multiplier": "worker_prefetch_multiplier",
    "celeryd_task_log_format": "worker_task_log_format",
    "celeryd_task_soft_time_limit": "task_soft_time_limit",
    "celeryd_task_time_limit": "task_time_limit", "enable_utc": "enable_utc",
    "result_accept_content": "result_accept_content",
}
URLS = {"broker": "broker_url", "backend": "result_backend"}  # the app's keywords for them
CELERY_DEFAULTS = {  # Celery's defaults of the settings miniq reads beyond the core's
    "task_annotations": None, "task_default_rate_limit": None, "task_queues": None,
    "worker_disable_rate_limits": False, "task_track_started": False, "result_extended": False,
    "task_default_exchange_type": "direct", "task_default_routing_key": None,
    "worker_redirect_stdouts": True, "worker_redirect_stdouts_level": "WARNING",
    "worker_hijack_root_logger": True,
    "worker_log_format": "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s",
    "worker_task_log_format": "[%(asctime)s: %(levelname)s/%(processName)s]"
                              " %(task_name)s[%(task_id)s]: %(message)s",
    "task_serializer": "json", "result_serializer": "json", "accept_content": ("json",),
    "result_accept_content": None, "task_create_missing_queues": True,
    "task_allow_error_cb_on_chord_header": False, "task_store_eager_result": False,
    "worker_pool": "prefork", "task_retry_on_worker_lost": False,
    "result_failure_expires": None, "beat_scheduler": "celery.beat:PersistentScheduler",
    "task_default_exchange": None,
    # taken and unused (README): Celery's defaults, for code that reads them
    "worker_send_task_events": False, "task_send_sent_event": False,
    "event_serializer": "json", "task_compression": None, "result_compression": None,
    "broker_connection_retry": True, "broker_connection_max_retries": 100,
    "broker_connection_retry_on_startup": None, "broker_connection_timeout": 4,
    "broker_pool_limit": 10, "broker_heartbeat": 120, "broker_transport_options": {},
    "task_publish_retry": True, "task_publish_retry_policy": {
        "max_retries": 3, "interval_start": 0, "interval_max": 1, "interval_step": 0.2},
    "task_queue_max_priority": None, "task_default_delivery_mode": 2,
    "worker_deduplicate_successful_tasks": False}
CELERY_MACHINERY = {"loader", "amqp", "events", "log", "control", "tasks", "fixups"}
# Celery's app attributes for the broker machinery miniq has not (the file is its broker)
CELERY_PARTS = {"amqp": "AMQP machinery (queues, router, producer; a worker serves a queue"
                        " of its own with worker_direct, or -Q)", "loader": "loader",
                "backend": "result backend", "log": "logging setup", "events": "event bus",
                "pool": "broker connection pool", "producer_pool": "producer pool",
                "connection": "broker connection", "connection_for_read": "broker connection",
                "connection_for_write": "broker connection",
                "steps": "worker bootsteps (for a liveness probe: miniq -A proj inspect ping)"}
DEFAULTS = {**apps.DEFAULTS, **CELERY_DEFAULTS}  # what app.conf reads where nothing is set
READ = {*DEFAULTS, *REFUSED}
PER_SECOND = {"s": 1, "m": 60, "h": 3600}  # a rate's unit: "10/s", "100/m", "1000/h"
# As Celery's: every @shared_task is registered on every app, made before it or after
SHARED = []
APPS = weakref.WeakSet()


class MissingPart(AttributeError, ImproperlyConfigured):
    """A part of Celery's app that miniq has not: hasattr() says False, and a worker's
    start-up receiver that reaches for it stops the worker (see signals)."""


class Miniq(apps.Miniq):
    """The app: ``Miniq("proj", broker="sqlite:///proj.db", include=[...])``, with
    what Celery projects use to wire it up."""

    _discover = None  # [(packages, related_name)] given to autodiscover_tasks
    _settings = None  # what config_from_object read: INSTALLED_APPS, for autodiscovery
    _read = {}  # the settings it found there
    _source = None  # reads a name from the settings object, as it holds it now
    _names = {}  # setting -> the names _follow reads it by
    namespace, strict_typing = None, True  # Celery's keywords, as its defaults: see __init__
    broker_class = RateBroker  # keeps rate limits across workers

    def __init__(self, main: str | None = None, *args: Any, changes: dict | None = None,
                 config_source: Any = None, namespace: str | None = None,
                 set_as_current: bool = True, strict_typing: bool = True, **conf: Any) -> None:
        """The core's app, with Celery's keywords: ``config_source`` (read as
        config_from_object reads it, under ``changes`` and the other keywords),
        ``namespace`` (its settings' prefix, and config_from_object's),
        ``set_as_current`` and ``strict_typing`` (its tasks' ``typing``)."""
        machinery = sorted(key for key in CELERY_MACHINERY if conf.get(key) is not None)
        machinery += ["autofinalize=False"] * (conf.pop("autofinalize", True) is False)
        if machinery:  # Celery's own parts, swapped: taken as settings, they did nothing
            raise TypeError(f"Celery(): {', '.join(machinery)} is not supported: miniq's"
                            " own parts (its loader, fixups, registry) cannot be replaced")
        if config_source is None:  # as Celery's loader (and its --config): this module
            config_source = os.environ.get("CELERY_CONFIG_MODULE") or None
        previous, source = apps._default, _object(config_source)
        settings = {} if source is None else _settings(source, namespace)
        self._read, self._names = dict(settings), {}
        given = {_named(key, namespace): value for key, value in {**(changes or {}),
                                                                  **conf}.items()}
        given.update(zip(("broker", "backend", "include"), args))
        for key, name in URLS.items():  # as Celery's: the environment's over any other
            given[key] = (os.environ.get(f"CELERY_{name.upper()}") or given.get(key)
                          or given.pop(name, None))
        given = {URLS.get(key, key): value for key, value in given.items() if value is not None}
        _refuse({**settings, **given})
        self.namespace, self.strict_typing = namespace, strict_typing  # before shared tasks
        if fixups.django_project():  # as Celery's: its task class, unless one is given
            settings.setdefault("task_cls", fixups.DjangoTask)
        # a source's keys named as the core's own arguments are no settings: kept as they are
        raw = {key: settings.pop(key) for key in ("main", "broker", "backend") if key in settings}
        super().__init__(main, **{**settings, **given})
        self.conf = Settings(self.conf, self)
        dict.update(self.conf, raw)
        self.conf.given.update(given)
        self._settings, self._source = source, None if source is None else _reader(source)
        if not set_as_current:
            apps._default = previous

    control = functools.cached_property(Control)  # revoke, inspect(), ping(), shutdown()
    # Celery's result classes bound to this app: app.GroupResult.restore(id), say
    AsyncResult = functools.cached_property(lambda self: _bound(results.AsyncResult, self))
    GroupResult = functools.cached_property(lambda self: _bound(results.GroupResult, self))
    ResultSet = functools.cached_property(lambda self: _bound(results.ResultSet, self))
    current_task = property(lambda self: tasks._running.task, doc="The task running here.")

    def signature(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's ``app.signature("proj.add", (2, 2))``: a signature of this app's."""
        return canvas.signature(*args, app=self, **kwargs)

    def _builtins(self) -> None:
        """Celery's built-in tasks, and every shared task defined so far."""
        super()._builtins()
        APPS.add(self)
        for task in SHARED:
            task._made_on(self)

    _configure_sent = False

    def _configured(self) -> None:
        """Send on_after_configure, once a process, if a receiver may listen."""
        self._configure_sent = True
        if "on_after_configure" in self.__dict__:  # made: someone may listen
            self.on_after_configure.send(self, source=self.conf)

    def _defaults(self, name: str) -> tuple:
        """As the core's. The first send of a process that sends tasks but does not load
        the app sends on_after_configure, as Celery's first read of the settings does:
        a receiver that sets task_routes holds for what it sends."""
        if not self._configure_sent:
            self._configured()
        return super()._defaults(name)

    @functools.cached_property
    def on_after_configure(self) -> Any:
        """Celery's signal, sent with ``sender=app`` and ``source=app.conf`` once a worker,
        beat or command has loaded the app, or at the first send of a process that sends
        tasks."""
        from .signals import Signal  # late: an app that connects nothing never loads it
        return Signal(name="app.on_after_configure")

    @functools.cached_property
    def on_after_finalize(self) -> Any:
        """Celery's signal, sent with ``sender=app`` once its tasks are registered: just
        after on_after_configure, as a worker, beat or command loads the app."""
        from .signals import Signal
        return Signal(name="app.on_after_finalize")

    def config_from_object(self, obj: Any, silent: bool = False, force: bool = False,
                           namespace: str = None) -> bool:
        """Settings from an object, a module or its name (``"proj.settings"``,
        ``"pkg.module:obj"``); with ``namespace="CELERY"``, its ``CELERY_*`` names."""
        try:
            obj = _object(obj)
        except ImportError:
            if silent:
                return False
            raise
        self._settings = obj
        self.namespace = namespace or self.namespace
        settings = _settings(obj, self.namespace)  # as Celery's: under what code set
        for key in self._read.keys() - settings.keys() - self.conf.given:  # gone, as Celery's
            if key in READ:
                dict.__setitem__(self.conf, key, copy.deepcopy(DEFAULTS.get(key)))
            else:
                dict.pop(self.conf, key, None)
        self._read, self._source, self._names = settings, _reader(obj), {}
        self.conf.before.clear()
        dict.update(self.conf, {k: v for k, v in settings.items() if k not in self.conf.given})
        self._routes.clear()  # routes are read again from the settings as they are now
        self._annotate_all()
        return True

    def autodiscover_tasks(self, packages: Any = None, related_name: str = "tasks",
                           force: bool = False) -> None:
        """Import ``<package>.tasks`` of each package (by default the settings'
        ``INSTALLED_APPS``, as Django's) when a worker loads the app, or now; each call's
        packages, as Celery's."""
        if force:
            self._import_discovered([(packages, related_name)])
        else:
            self._discover = [*(self._discover or ()), (packages, related_name)]

    def _import_discovered(self, calls, installed=None):
        for packages, related_name in calls:
            if callable(packages):
                packages = packages()
            if packages is None and installed is None and fixups.django_project():
                installed = fixups.app_names()
            if packages is None:  # as Celery's: Django's app configs, else INSTALLED_APPS
                packages = installed or getattr(self._settings, "INSTALLED_APPS", ())
            for package in packages:
                _import_related(package, related_name)

    def import_includes(self) -> None:
        installed = fixups.setup_django() if fixups.django_project() else None
        for _, response in emit("_import_modules", self) or ():
            if isinstance(response, Exception):  # as Celery's: logged, then raised
                raise response
        super().import_includes()
        if self._discover is not None:
            self._import_discovered(self._discover, installed)
        _refuse(self.conf)
        self._annotate_all()
        if not self._configure_sent:
            self._configured()
        if "on_after_finalize" in self.__dict__:
            self.on_after_finalize.send(self)

    def task(self, *args: Any, **options: Any) -> Any:
        """``@app.task`` as the core's; a bad ``rate_limit`` fails here, and the task
        made gets what ``task_annotations`` sets for it."""
        rate(options.get("rate_limit"), "@app.task")
        make = super().task(**{"base": self.Task, **options})

        def register(fun: Callable) -> Any:
            task = _annotate(make(fun), _annotations(self.conf))
            if not (self.strict_typing or "typing" in options):  # as Celery's: the app's rule
                task.typing = False
            return task
        return apps.decorator(register, args, options, "app.task")

    @property
    def Task(self) -> type:
        """The class ``@app.task`` makes tasks from (``task_cls``, a class or its name);
        assigning one, as Flask's guide does, sets it for the tasks defined after."""
        cls = self.conf.get("task_cls") or Task
        if isinstance(cls, str):  # as Celery's symbol_by_name: "module:Class", "module.Class"
            module, _, name = cls.partition(":") if ":" in cls else cls.rpartition(".")
            cls = self.conf.task_cls = getattr(importlib.import_module(module), name)
        return cls

    @Task.setter
    def Task(self, cls: type) -> None:
        old, self.conf.task_cls = self.Task, cls
        for task in self.tasks.values():  # made from the old class: as Celery's, from this one
            if type(task).__bases__ == (old,) and issubclass(cls, old):
                type(task).__bases__ = (cls,)
        for task in SHARED:  # made as this app was made: made again from this class
            self.tasks.pop(task._name_on(self), None)
            task._made_on(self)

    def register_task(self, task: Any, **options: Any) -> Any:
        """Register an instance of a ``Task`` subclass that defines ``run`` (Celery's
        class-based task), named by its ``name``, else by its module and class."""
        task = task() if isinstance(task, type) else task  # as Celery's registry: made
        cls = type(task)
        name = getattr(task, "name", None) or self.gen_task_name(cls.__name__, cls.__module__)
        task.__class__ = cls._subclass(self, cls.run, name, {"bind": True, **options})
        type(task).__name__, type(task).__qualname__ = cls.__name__, cls.__qualname__
        type(task).name = name  # what a base's __init_subclass__ set for the class made here
        task.__wrapped__ = cls.run  # what apply_async checks a call against, self first
        if "app" not in vars(cls):  # as Celery's bound class: Mul().delay() sends too,
            cls.app, cls._requests = self, threading.local()  # and Mul()(2, 3) runs
        self.tasks[name] = _annotate(task, _annotations(self.conf))
        return task

    def set_default(self) -> None:
        """Make this the app that ``current_app`` and ``shared_task`` stand for (in every
        thread: Celery's current app is a thread's, its default the process's)."""
        apps._default = self

    set_current = set_default
    finalized = True  # as Celery's once finalized: miniq's tasks are made at once

    def __getattr__(self, name: str) -> Any:
        if name in CELERY_PARTS:  # named, not a bare AttributeError: hasattr() still False
            raise MissingPart(f"app.{name} is Celery's {CELERY_PARTS[name]}: miniq has"
                              " none (its broker and result store is the file, app.broker)")
        return object.__getattribute__(self, name)  # its own error, a property's too

    def finalize(self, auto: bool = False) -> None:
        """Nothing to do: a task is made as it is defined."""

    def config_from_envvar(self, variable_name: str, silent: bool = False,
                           force: bool = False) -> bool:
        """As Celery's: config_from_object of the module an environment variable names."""
        module_name = os.environ.get(variable_name)
        if not module_name:
            if silent:
                return False
            raise ImproperlyConfigured(f"The environment variable {variable_name!r} is not"
                                       " set, and has to be set to a module's name")
        return self.config_from_object(module_name, silent=silent, force=force)

    def _annotate_all(self):
        maps = _annotations(self.conf)
        for task in self.tasks.values():
            _annotate(task, maps)

    def rate_intervals(self) -> dict:
        """Seconds between starts of each rate-limited task: its ``rate_limit``, else
        ``task_default_rate_limit``. The broker keeps them across all workers."""
        if self.conf.get("worker_disable_rate_limits"):
            return {}
        default = self.conf.get("task_default_rate_limit")
        limits = {name: rate(default if task.rate_limit is None else task.rate_limit, name)
                  for name, task in self.tasks.items()}
        return {name: 1 / per_second for name, per_second in limits.items() if per_second}

    admit = staticmethod(admit)  # the claimed messages free to start now: rate-limited ones in their turn

    def add_periodic_task(self, schedule: Any, sig: Any, args: Any = (), kwargs: Any = (),
                          name: str = None, **options: Any) -> str:
        """Run ``sig`` every ``schedule`` (seconds, a timedelta or a crontab): an entry
        of ``conf.beat_schedule`` named ``name``."""
        sig = (sig.clone(args, dict(kwargs)) if isinstance(sig, canvas.Signature)  # as Celery's:
               else self.signature(sig.name, args, dict(kwargs)))  # a task's name, or args first
        key = name or repr(sig)
        self.conf.beat_schedule[key] = {"task": sig["task"], "schedule": schedule,
                                        "args": sig["args"], "kwargs": sig["kwargs"],
                                        "options": {**sig["options"], **options}}
        return key

    @property
    def timezone(self):
        """As Celery's: app.conf.timezone as a tzinfo, UTC where none is set."""
        return zone(self.conf)

    @timezone.deleter
    def timezone(self):  # Celery's idiom to read it again: read at each use here
        pass

    def now(self) -> datetime:
        """As Celery's: the time now, in the app's time zone."""
        return datetime.now(self.timezone)

    def uses_utc_timezone(self) -> bool:
        return self.timezone == timezone.utc

    def start(self, argv: list = None) -> int:
        """The command line for this app: ``python proj.py worker -l INFO``; its exit
        status. Run as the script's own command line (no argv), a command that fails
        ends the process with its status, as it would from the shell."""
        from .cli import main
        status = main(sys.argv[1:] if argv is None else list(argv), app=self)
        if status and argv is None:
            raise SystemExit(status)
        return status

    def worker_main(self, argv: list = None) -> int:
        """``start()`` with ``worker`` as the command; a worker that fails (or stops cold)
        ends the process with its status, as the command would."""
        argv = sys.argv[1:] if argv is None else list(argv)
        status = self.start(argv if argv[:1] == ["worker"] else ["worker", *argv])
        if status:
            raise SystemExit(status)
        return status


Celery = Miniq  # so `from miniq import Celery` reads as the code it may one day be


def _bound(cls, bound_app):
    """A subclass of cls whose results are of bound_app where none is given, as Celery's."""
    def __init__(self, *args, **kwargs):
        cls.__init__(self, *args, **{"app": bound_app, **kwargs})

    def restore(kind, id, backend=None, app=None):
        return cls.restore(id, backend, app or bound_app)
    return type(cls.__name__, (cls,), {
        "__init__": __init__, "__module__": cls.__module__, "binds": cls,
        **({"restore": classmethod(restore)} if hasattr(cls, "restore") else {})})


class Proxy:
    """Stands for what ``get()`` gives each time it is used, as Celery's proxies."""

    def __init__(self, get: Callable) -> None:
        self._get_current_object = get

    def __getattr__(self, key: str) -> Any:
        return getattr(self._get_current_object(), key)

    def __bool__(self) -> bool:
        return bool(self._get_current_object())

    def __repr__(self) -> str:
        return repr(self._get_current_object())


current_app = Proxy(apps.default_app)  # the app made last, or set by set_default()
current_task = Proxy(lambda: tasks._running.task)  # the task running here; falsy if none


def _import_related(package, related_name):
    """Import package.related_name, as Celery's loader finds it: a path that is no module
    (a Django AppConfig's, say) stands for the package above it, and a package without
    that module is skipped; any other missing import is raised."""
    try:
        importlib.import_module(package)
        if not related_name:
            return
    except ModuleNotFoundError:
        package = package.rpartition(".")[0]
        if not package:
            raise
    name = f"{package}.{related_name}"
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise


def _object(name):
    """What a name such as ``"pkg.module"`` or ``"pkg.module:attr"`` names; any other
    value as it is."""
    if not isinstance(name, str):
        return name
    module, _, attr = name.partition(":")
    if attr:
        return getattr(importlib.import_module(module), attr)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:  # as Celery's: else a module's attribute,
        module, _, attr = name.rpartition(".")  # "pkg.module.attr"
        if exc.name != name or not module:
            raise
        obj = importlib.import_module(module)
        if not hasattr(obj, attr):
            raise
        return getattr(obj, attr)


class Settings(apps.Conf):
    """``app.conf`` as Celery's: Celery 3's names (``CELERY_ALWAYS_EAGER``) set the
    settings they stand for; what code sets (the app's keywords, ``update()``, an
    assignment) stays over what ``config_from_object`` reads; the environment's
    ``CELERY_BROKER_URL`` and ``CELERY_RESULT_BACKEND`` stay over any other."""

    def __init__(self, conf, app):
        super().__init__({**copy.deepcopy(CELERY_DEFAULTS), **conf})
        object.__setattr__(self, "given", set())  # the keys code set
        object.__setattr__(self, "app", weakref.ref(app))  # no cycle: an app ends with its uses
        object.__setattr__(self, "before", {})  # what _follow replaced, to put back

    def __setitem__(self, key, value):
        key = _named(key, getattr(self.app(), "namespace", None))
        _refuse({key: value})  # as code sets it: not first where a worker starts
        self.given.add(key)
        if key in URLS.values():  # as Celery's: the environment's, over what code sets
            value = os.environ.get(f"CELERY_{key.upper()}") or value
        super().__setitem__(key, value)
        if key == "task_annotations" and self.app():  # as Celery's: they hold for the tasks
            self.app()._annotate_all()  # made before too

    __setattr__ = __setitem__

    def _read_as(self, key):
        """The key a read looks up: itself if set, else, as Celery's, the setting an old or
        a namespace's name stands for; as the settings object holds it now."""
        app = self.app()
        namespace = getattr(app, "namespace", None)
        key = key if dict.__contains__(self, key) else _named(key, namespace)
        if getattr(app, "_source", None) is not None and key not in self.given:
            self._follow(key, app)
        return key

    def _follow(self, key, app):
        """As Celery's, which reads its settings object at each use (an assignment to
        Django's settings in a test holds at once): a setting code did not set, as the
        object holds it now; one gone from it, as the app had it without the object."""
        names = app._names.get(key)
        if names is None:
            names = app._names[key] = _source_names(key, app.namespace, app._read)
        for name in names:
            value = app._source(name)
            if value is not MISSING:
                break
        current = dict.get(self, key, MISSING)
        if value is current:
            return
        if value is MISSING:
            if key in self.before:
                value = self.before.pop(key, current)
            elif key in app._read:  # as config_from_object drops a setting it lacks
                value = copy.deepcopy(DEFAULTS[key]) if key in DEFAULTS else MISSING
            else:
                return  # never the object's
        elif key not in app._read:
            self.before.setdefault(key, current)
        if value is MISSING:
            dict.pop(self, key, None)
            return
        changed = value != current
        if changed:
            _refuse({key: value})
        dict.__setitem__(self, key, value)  # the object's own: the next read is one look
        if changed:
            app._routes.clear()
            if key == "task_annotations":
                app._annotate_all()

    def __getitem__(self, key):
        return super().__getitem__(self._read_as(key))

    def __contains__(self, key):
        return super().__contains__(self._read_as(key))

    def get(self, key, default=None):
        return super().get(self._read_as(key), default)

    @property
    def timezone(self):  # as Celery's: Django's TIME_ZONE where no timezone is set
        return self.get("timezone") or self.get("TIME_ZONE")

    @property
    def task_default_exchange(self):  # as Celery's: the default queue's name where unset
        return self.get("task_default_exchange") or self.get("task_default_queue")

    @property
    def task_default_routing_key(self):
        return self.get("task_default_routing_key") or self.get("task_default_queue")

    def __reduce__(self):  # a copy or a pickle holds the settings alone
        return apps.Conf, (dict(self),)

    def update(self, *args, **kwargs):
        for key, value in dict(*args, **kwargs).items():
            self[key] = value


def _named(key, namespace):
    """The setting a name code gives stands for: as Celery's, a namespace's own name
    (``CELERY_TASK_ALWAYS_EAGER``), or Celery 3's (``CELERY_ALWAYS_EAGER``)."""
    prefix = f"{namespace}_" if namespace else None
    if prefix and isinstance(key, str) and key.startswith(prefix) and \
            _prefixed(namespace, key[len(prefix):]) == key:
        own = key[len(prefix):].lower()
        key = own if own in READ else key
    return _new_name(key) or key


def _new_name(key):
    """The setting a Celery 3 name (all capitals) stands for, if miniq reads it; else None."""
    return OLD_NAMES.get(key.lower()) if isinstance(key, str) and key.isupper() else None


def _reader(obj):
    """Reads a name from a settings object (MISSING where it has none), as _settings
    does: from a module its dict, from Django's settings the object behind them now."""
    if isinstance(obj, (Mapping, types.ModuleType)):
        held = obj if isinstance(obj, Mapping) else vars(obj)
        return lambda name: held.get(name, MISSING)

    def read(name):
        try:
            return getattr(getattr(obj, "_wrapped", obj), name, MISSING)
        except Exception:  # noqa: BLE001 - as Celery's, which reads only settings
            return MISSING
    return read


def _prefixed(namespace, key):
    """A setting's name under a namespace, in the namespace's case, as Celery's:
    CELERY_TASK_ALWAYS_EAGER, celery_task_always_eager."""
    name = f"{namespace}_{key}"
    return name.upper() if namespace.isupper() else name.lower() if namespace.islower() else name


def _source_names(key, namespace, read):
    """The names a settings object may give a setting, the first found first: its own
    there (a namespace's: CELERY_TASK_ALWAYS_EAGER), then those it was read by, as
    Celery's: the plain new name, then Celery 3's."""
    own = _prefixed(namespace, key) if namespace and not str(key).isupper() else key
    old = [name.upper() for name, new in OLD_NAMES.items() if new == key]
    return own, *(name for name in (key, *old) if name != own and name in read)


def _settings(obj, namespace):
    """The settings an object holds: a dict's items; else, as Celery reads them, every
    attribute (inherited, or behind a proxy such as Django's settings), by name: under
    a namespace its names with that prefix, and Celery 3's names as Celery maps them."""
    prefix = f"{namespace}_" if namespace else ""
    get = obj.get if isinstance(obj, Mapping) else functools.partial(getattr, obj)
    # settings by their new names, by Celery 3's, and every key as it is (conf.get() reads
    # them, as Celery's): under a namespace, a setting's own name stands below its prefixed
    new, old, names, plain = {}, {}, {}, {}
    for key in (list(obj) if isinstance(obj, Mapping) else dir(obj)):
        if not isinstance(key, str) or key.startswith("_"):
            continue
        name = key[len(prefix):].lower() if prefix and key.startswith(prefix) else None
        if name not in READ and _new_name(key):
            name = names[key] = _new_name(key)
        with contextlib.suppress(Exception):  # as Celery's, which reads only settings
            plain[key] = value = get(key)
            if name is not None:
                (old if key in names else new)[name] = value
    # as Celery's: the names are read as the kind most of them are; a name of the other
    # kind is a mix, unless its own name of this kind is there too (then the new one holds)
    news = plain.keys() & READ
    if names and news and not prefix:
        kind, mixed = "new", [f"{key} -> {name}" for key, name in names.items()
                              if name not in plain]
        if len(names) > len(news):
            unpaired = news - set(names.values())
            kind, mixed = "old", [f"{name} -> {key.upper()}" for key, name in OLD_NAMES.items()
                                  if name in unpaired]
        if mixed:
            raise ImproperlyConfigured("Cannot mix new and old setting keys, please rename the"
                                       f" following settings to the {kind} format:"
                                       f" {', '.join(sorted(set(mixed)))}")
    settings = {**plain, **old, **{name: plain[name] for name in old if name in plain}, **new}
    _refuse(settings)
    return settings


def _refuse(settings):
    for key, (allowed, why) in REFUSED.items():
        value = settings.get(key, allowed)
        if isinstance(allowed, set):  # any of Celery's names of the one value miniq takes
            allowed = value if isinstance(value, str) and value in allowed else allowed
        elif isinstance(value, (list, tuple, set, frozenset)):  # accept_content: only JSON
            names = {"json" if v == "application/json" else v for v in value}  # ever arrives
            value = allowed if "json" in names else sorted(names)
        if value != allowed and not (key == "result_accept_content" and value is None):
            raise ImproperlyConfigured(f"{key}={value!r} is not supported: {why}")
    queues = settings.get("task_queues")
    for queue in queues if isinstance(queues, (list, tuple)) else ():
        if getattr(getattr(queue, "exchange", None), "type", None) == "fanout":  # Broadcast:
            raise ImproperlyConfigured(  # a task would wait in it for ever
                f"task_queues: {queue.name!r} is a broadcast queue (a fanout exchange), not"
                " supported: miniq gives each task to one worker, never a copy to each")
    options = settings.get("broker_transport_options")
    order = options.get("queue_order_strategy") if isinstance(options, dict) else None
    if order not in (None, "round_robin"):  # kombu's others: a queue drained before the next
        raise ImproperlyConfigured(f"broker_transport_options queue_order_strategy={order!r}"
                                   " is not supported: a worker's queues take turns"
                                   " (round_robin)")


def _annotations(conf):
    """``task_annotations`` as a list of dicts, the forms miniq takes."""
    setting = conf.get("task_annotations") or []
    maps = list(setting) if isinstance(setting, (list, tuple)) else [setting]
    attrs = [value for entry in maps if isinstance(entry, dict) for value in entry.values()]
    if not all(isinstance(entry, dict) for entry in maps + attrs):
        raise ImproperlyConfigured(
            f"task_annotations={setting!r} is not supported: miniq takes a dict of task"
            " name (or '*') to attributes, or a list of such dicts")
    return maps


def _annotate(task, maps):
    """Set on the task what the annotations give it, in Celery's order: the first dict
    naming it, then the first with ``"*"`` (so ``"*"`` has the last word)."""
    for key in (task.name, "*"):
        for attr, value in next((m[key] for m in maps if key in m), {}).items():
            if attr.startswith("@"):  # as Celery's: wraps a method, value(method) in its place
                attr, around = attr[1:], value
                method = getattr(type(task), attr)
                method = getattr(method, "__wrapped__", None) or method
                value = around(method)
                value.__wrapped__ = method
            setattr(type(task), attr, value)  # the task's own class, as Celery: hooks bind
    try:
        type(task)._checked()
    except TypeError as exc:
        raise ImproperlyConfigured(f"task_annotations: {exc}") from None
    rate(task.rate_limit, task.name)
    return task


def rate(value: Any, name: str = "a task") -> float:
    """Starts a second that a rate limit allows, as Celery's ``rate()``: ``"10/s"``,
    ``"100/m"``, ``"1000/h"`` or a number a second; 0 (no limit) for None or 0."""
    count, _, unit = str(value or 0).partition("/")
    try:
        per_second = float(count) / PER_SECOND[unit or "s"]
    except (KeyError, ValueError):  # True, [10], "10/x", "ten/s"
        per_second = -1.0
    if not 0 <= per_second < float("inf"):
        raise ImproperlyConfigured(f"{name}: rate_limit={value!r} is not a rate; use a number"
                                   " of tasks a second or a string like '10/s', '100/m', '1000/h'")
    return per_second


class SharedTask:
    """Stands for the task of that name in the current app, made there on first use."""

    def __init__(self, fun: Callable, options: dict):
        self._fun, self._options = fun, options
        functools.update_wrapper(self, fun)

    def _get_current_object(self):
        """The task it stands for in the current app (Celery's proxy method)."""
        return self._made_on(apps.default_app())

    def _name_on(self, app):
        return self._options.get("name") or app.gen_task_name(self._fun.__name__,
                                                              self._fun.__module__)

    def _made_on(self, app):
        """Its task in that app, made there if it is not yet."""
        return app.tasks.get(self._name_on(app)) or app.task(**self._options)(self._fun)

    def __getattr__(self, key: str) -> Any:
        return getattr(self._get_current_object(), key)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._get_current_object()(*args, **kwargs)

    def __repr__(self) -> str:
        return repr(self._get_current_object())

    @property
    def __class__(self):  # as Celery's proxy: isinstance(shared, Task) holds
        return type(self._get_current_object())

    def __reduce__(self):
        return self._get_current_object().__reduce__()


def shared_task(*args: Any, **options: Any) -> Any:
    """``@shared_task`` or ``@shared_task(bind=True, ...)``: a task for whichever app
    the project makes, registered on each app there is and each made later, so a worker
    knows it whichever was imported first."""
    def register(fun: Callable) -> SharedTask:
        task = SharedTask(fun, options)
        SHARED.append(task)
        for app in list(APPS):
            task._made_on(app)
        return task
    return apps.decorator(register, args, options, "shared_task")
