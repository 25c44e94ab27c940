"""The error hierarchy, in Celery's names. Everything miniq raises on purpose
derives from ``MiniqError``, and so from ``Exception`` too: ``except Exception``
in a task also catches ``SoftTimeLimitExceeded``, exactly as in Celery.
"""


class MiniqError(Exception):
    """Base class of every error miniq raises on purpose."""


class ImproperlyConfigured(MiniqError):
    """The app, the broker URL or the database path cannot work."""


class OperationalError(MiniqError):
    """The database failed: locked for too long, unreadable, or gone."""


class TaskError(MiniqError):
    """A task-related error."""


class TimeoutError(TaskError):  # noqa: A001 - Celery's name
    """``AsyncResult.get(timeout=...)`` gave up waiting."""


class NotRegistered(KeyError, TaskError):
    """The worker has no task of that name."""

    def __str__(self) -> str:  # KeyError would show repr(args)
        return str(self.args[0]) if self.args else ""


class MaxRetriesExceededError(TaskError):
    """``Task.retry()`` was called with no retries left."""


class TaskRevokedError(TaskError):
    """The task was revoked, expired before it ran, or was terminated."""


class ChordError(TaskError):
    """A member of a chord failed, so the callback fails too."""


class WorkerLostError(TaskError):
    """The child process running the task exited before it reported back."""


class SoftTimeLimitExceeded(MiniqError):
    """Raised inside a running task when its soft time limit passes."""


class TimeLimitExceeded(MiniqError):
    """The task passed its hard time limit and its child was killed."""


class Retry(MiniqError):
    """Raised by ``Task.retry()``: the worker schedules the task again."""

    def __init__(self, message=None, exc=None, when=None):
        self.exc, self.when = exc, when
        super().__init__(message or f"Retry in {when}s" + (f": {exc!r}" if exc else ""))


__all__ = ["MiniqError", "ImproperlyConfigured", "OperationalError", "TaskError", "TimeoutError", "NotRegistered",
           "MaxRetriesExceededError", "TaskRevokedError", "ChordError", "WorkerLostError",
           "SoftTimeLimitExceeded", "TimeLimitExceeded", "Retry"]
