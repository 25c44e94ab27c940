"""Celery's ``celery.contrib.abortable``: every miniq task can be aborted already
(``self.is_aborted()``, ``AsyncResult.abort()``); these names let code that imports
them run as it is."""
from ..result import AsyncResult
from ..task import Task

ABORTED = "ABORTED"


class AbortableAsyncResult(AsyncResult):
    def is_aborted(self) -> bool:
        """True once ``abort()`` (or a revoke) asked the task to stop."""
        return self.app.broker.is_aborted(self.id)


class AbortableTask(Task):
    def AsyncResult(self, task_id: str) -> AbortableAsyncResult:
        return AbortableAsyncResult(task_id, app=self.app)

    def is_aborted(self, **kwargs) -> bool:
        """As Celery's: this run's, or that of ``task_id=``."""
        task_id = kwargs.get("task_id")
        return super().is_aborted() if task_id is None else self.AsyncResult(task_id).is_aborted()
