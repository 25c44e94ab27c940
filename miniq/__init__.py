"""miniq: Celery's programming model on one machine, with one SQLite file
as broker and result backend. Public names are re-exported here.
"""
import importlib
import sys

if sys.version_info < (3, 9):  # checked first, in syntax Python 3.6 still parses
    version = sys.version.split()[0]
    raise ImportError(  # name= lets `python -m miniq` print one line, not a traceback
        "miniq needs Python 3.9 or newer, not %s" % version, name=__name__)

from . import exceptions, states
from .exceptions import (ChordError, MaxRetriesExceededError, MiniqError, NotRegistered, Retry,
                         SoftTimeLimitExceeded, TaskRevokedError, TimeLimitExceeded,
                         TimeoutError, WorkerLostError)
from .canvas import Signature, chain, chord, chunks, group, maybe_signature, signature, subtask
from .project import Celery, Miniq, current_app, current_task, shared_task
from .result import AsyncResult, EagerResult, GroupResult
from .result import new_id as uuid  # Celery's celery.uuid(): a random UUID string
from .task import Task

__version__ = "0.1.0"


def __getattr__(name):  # as Celery's package: miniq.signals with no import of its own
    if name in ("signals", "schedules"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [  # the app and its tasks, workflows, results, errors
    "Miniq", "Celery", "current_app", "current_task", "shared_task", "uuid", "Task", "Signature", "signature", "chain", "group", "chord",
    "chunks", "maybe_signature", "subtask",
    "AsyncResult", "EagerResult", "GroupResult", "exceptions", "states", "MiniqError",
    "SoftTimeLimitExceeded", "TimeLimitExceeded", "WorkerLostError", "TimeoutError",
    "NotRegistered", "Retry", "MaxRetriesExceededError", "TaskRevokedError", "ChordError",
]
