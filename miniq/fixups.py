"""A Django project's worker, as Celery's Django fixup makes it: where
DJANGO_SETTINGS_MODULE names the settings and Django is installed, Django is set
up before the task modules import their models, autodiscovery reads the
installed apps' configs, each child closes the connections its parent opened, each
task starts and ends with Django's connections closed (as Celery 5.7's: nothing a task
did to its connection reaches the next), and tasks have delay_on_commit().
"""
import contextlib
import functools
import importlib.util
import os

from .task import Task


def django_project() -> bool:
    """Whether this process runs a Django project, as Celery's fixup decides it."""
    return bool(os.environ.get("DJANGO_SETTINGS_MODULE")) and (
        importlib.util.find_spec("django") is not None)


class DjangoTask(Task):
    """Celery's task class of a Django project: sent once the transaction commits."""

    def delay_on_commit(self, *args, **kwargs) -> None:
        self.apply_async_on_commit(args, kwargs)

    def apply_async_on_commit(self, *args, **kwargs) -> None:
        from django.db import transaction
        transaction.on_commit(functools.partial(self.apply_async, *args, **kwargs))


def setup_django() -> list:
    """Set Django up (once a process: it knows), then close its connections as each
    child starts and around each task it runs; the installed apps' names, to find
    their tasks."""
    import django

    from . import signals
    django.setup()
    signals.worker_process_init.connect(_forked)
    signals.task_prerun.connect(_around_task)
    signals.task_postrun.connect(_around_task)
    return app_names()


def app_names():
    """The names of Django's app configs (an AppConfig path names its app), as Celery's
    fixup finds tasks in; None until Django is set up."""
    from django.apps import apps
    return [config.name for config in apps.get_app_configs()] if apps.ready else None


def _forked(**_):
    """A child's connections are its parent's: as Celery's, their sockets are closed
    here without a word to the server (the parent still talks on them), then they are
    forgotten."""
    from django.db import connections
    for connection in connections.all():
        with contextlib.suppress(AttributeError, OSError, TypeError):  # SQLite's has no fd
            os.close(connection.connection.fileno())
    _close_all()


def _around_task(task=None, **_):
    if task is not None and not task.request.is_eager:  # as Celery's: only in a worker
        _close_all()


def _close_all():
    from django.core.cache import caches
    from django.db import DatabaseError, InterfaceError, connections
    for connection in connections.all():
        with contextlib.suppress(InterfaceError, DatabaseError):  # closing one gone already
            connection.close()
    caches.close_all()
