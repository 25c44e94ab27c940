"""Celery's ``celery._state``: the current app and task, for code that imports them from
there (Celery's own task log formatter does, and projects copy it)."""
from .app import default_app as get_current_app
from .project import current_app, current_task
from .task import _running

__all__ = ["current_app", "current_task", "get_current_app", "get_current_task",
           "get_current_worker_task"]


def get_current_task():
    """The task running in this thread, or None."""
    return _running.task


def get_current_worker_task():
    """As Celery's: the task a worker runs here (not one it calls as a function), or None."""
    request, task = _running.request, _running.task
    return task.app.tasks.get(request.task, task) if request and task else None
