"""The error hierarchy, in Celery's names and shape: ``MiniqError`` (also named
``CeleryError``) stands where Celery's ``CeleryError`` does. As there, the database's
error (Celery's is its broker's) and the errors of a child's run (Celery's come from
its pool) are not under it, so that an ``except`` catches what it catches on Celery.
All are ``Exception``s: ``except Exception`` in a task catches a soft time limit too.

    MiniqError (CeleryError)
    ├── ImproperlyConfigured
    │   └── DatabaseUnavailable (also OperationalError)
    ├── TaskError
    │   ├── TimeoutError
    │   ├── IncompleteStream
    │   ├── NotRegistered (also KeyError)
    │   ├── QueueNotFound (also KeyError)
    │   ├── InvalidTaskError
    │   ├── MaxRetriesExceededError
    │   ├── TaskRevokedError
    │   └── ChordError
    └── TaskPredicate: what a task raises to tell the worker what to do
        ├── Retry
        ├── Ignore
        └── Reject
    OperationalError: the database failed
    SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError: a child's run ended
"""


class MiniqError(Exception):
    """Base class of miniq's errors, but those of the database and of a child's run."""


CeleryError = MiniqError


class ImproperlyConfigured(MiniqError):
    """The app, the broker URL or the database path cannot work."""


class OperationalError(Exception):
    """The database failed: locked for too long, unreadable, or gone; or it ``refused``
    a value (too big, or against a constraint), which is the value's fault, not the file's."""

    refused = False
    full = False  # the disk had no room for the write


class DatabaseUnavailable(ImproperlyConfigured, OperationalError):
    """The database file cannot be opened or used (no folder, not writable, not a
    database): a setup error, and, as Celery's broker that cannot be reached, the
    OperationalError a send raises (``except add.OperationalError``)."""


class TaskError(MiniqError):
    """A task-related error."""


class TimeoutError(TaskError):  # noqa: A001 - Celery's name
    """``AsyncResult.get(timeout=...)`` gave up waiting."""


class IncompleteStream(TaskError):
    """``iterdeps()`` reached a task not yet done."""


class NotRegistered(KeyError, TaskError):
    """The worker has no task of that name."""

    def __repr__(self) -> str:  # as Celery's; str() is KeyError's, the name quoted
        return f"Task of kind {self} never registered, please make sure it's imported."


class QueueNotFound(KeyError, TaskError):
    """Celery's error for a queue missing from ``task_queues``; miniq never raises it:
    a queue exists once a name is used."""


class InvalidTaskError(TaskError):
    """A message miniq cannot run as it stands: its row is malformed."""


class MaxRetriesExceededError(TaskError):
    """``Task.retry()`` was called with no retries left; as Celery's, it keeps the
    arguments the retry would have run with."""

    def __init__(self, *args, task_args=(), task_kwargs=None):
        super().__init__(*args)
        self.task_args, self.task_kwargs = task_args or [], task_kwargs or {}


class TaskRevokedError(TaskError):
    """The task was revoked, expired before it ran, or was terminated."""


class ChordError(TaskError):
    """A member of a chord failed, so the callback fails too."""


class WorkerLostError(Exception):
    """The child process running the task exited before it reported back."""


def _class_and_args(self):  # as billiard's: SoftTimeLimitExceeded(), TimeLimitExceeded(5,)
    return f"{type(self).__name__}{self.args}"


class SoftTimeLimitExceeded(Exception):
    """Raised inside a running task when its soft time limit passes."""

    __str__ = _class_and_args


class TimeLimitExceeded(Exception):
    """The task passed its hard time limit and its child was killed."""

    __str__ = _class_and_args


class TaskPredicate(MiniqError):
    """Base of what a task raises to tell the worker how to end its run."""


class Retry(TaskPredicate):
    """Raised by ``Task.retry()``: the worker schedules the task again."""

    def __init__(self, message=None, exc=None, when=None, is_eager=False, sig=None):
        self.exc, self.when = exc, when  # as Celery's: seconds as given, or an eta
        self.message, self.is_eager, self.sig = message, is_eager, sig
        self.excs = exc if isinstance(exc, str) else repr(exc) if exc else None
        super().__init__(message or f"Retry {self.humanize()}" + (f": {exc!r}" if exc else ""))

    def humanize(self):
        """When it runs again, in words: ``in 5s``, ``at <eta>``."""
        return f"in {self.when}s" if isinstance(self.when, (int, float)) else f"at {self.when}"


class Ignore(TaskPredicate):
    """Raised by a task: the worker records no state for this run."""


class Reject(TaskPredicate):
    """Raised by a task: refuse its message; with requeue (and acks_late) run it again."""

    def __init__(self, reason=None, requeue=False):
        self.reason, self.requeue = reason, requeue
        super().__init__(reason, requeue)

    def __repr__(self):
        return f"reject requeue={self.requeue}: {self.reason}"


class CeleryWarning(UserWarning):
    """Base class of the warnings miniq gives, in Celery's name."""


class AlwaysEagerIgnored(CeleryWarning):
    """send_task() sends even under task_always_eager, as Celery's does."""


class DuplicateTaskNameWarning(CeleryWarning):
    """Another function took a task name already taken: the first one stays, as Celery's."""


__all__ = ["MiniqError", "CeleryError", "ImproperlyConfigured", "OperationalError", "DatabaseUnavailable",
           "TaskError", "TimeoutError", "IncompleteStream", "NotRegistered", "QueueNotFound", "InvalidTaskError", "MaxRetriesExceededError", "TaskRevokedError",
           "ChordError", "WorkerLostError", "SoftTimeLimitExceeded", "TimeLimitExceeded",
           "TaskPredicate", "Retry", "Ignore", "Reject", "CeleryWarning", "AlwaysEagerIgnored",
           "DuplicateTaskNameWarning"]
