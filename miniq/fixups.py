"""A Django project's worker, as Celery's Django fixup makes it: where
DJANGO_SETTINGS_MODULE names the settings and Django is installed, Django is set
up before the task modules import their models, autodiscovery reads the
installed apps' configs, each task starts and ends with no database connection
too old or broken to use (CONN_MAX_AGE holds), and tasks have delay_on_commit().
"""
import contextlib
import functools
import importlib.util
import os
import weakref

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
    """Set Django up (once a process: it knows), then close stale connections around
    each task a worker runs; the installed apps' names, to find their tasks."""
    import django
    from django.apps import apps

    from . import signals
    django.setup()
    signals.task_prerun.connect(_close_stale)
    signals.task_postrun.connect(_close_stale)
    return [config.name for config in apps.get_app_configs()]


def follow_settings(app, obj, namespace) -> None:
    """Where obj is Django's settings, the app reads them again each time one under its
    namespace changes, as a test's override_settings changes them: Celery reads Django's
    settings at each use."""
    from django.conf import settings
    from django.core.signals import setting_changed
    if obj is not settings or getattr(app, "_follows", False):
        return
    app._follows, made = True, weakref.ref(app)

    def changed(setting, **_):
        if made() is None:  # the app is gone
            setting_changed.disconnect(changed)
        elif setting.startswith(f"{namespace}_" if namespace else ""):
            made().config_from_object(obj, namespace=namespace)
    setting_changed.connect(changed, weak=False)


def _close_stale(task=None, **_):
    from django.db import DatabaseError, InterfaceError, connections
    if task is None or task.request.is_eager:  # as Celery's: only in a worker
        return
    for connection in connections.all():
        with contextlib.suppress(InterfaceError, DatabaseError):  # closing one gone already
            connection.close_if_unusable_or_obsolete()
