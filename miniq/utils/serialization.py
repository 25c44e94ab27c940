"""Celery's wrapper for a task's exception that cannot be made again where it is read."""


class UnpickleableExceptionWrapper(Exception):
    """A task's exception whose class, nor any base above Exception, takes its arguments
    again: its module, class name, arguments and repr, as Celery's wrapper holds them."""

    def __init__(self, exc_module, exc_cls_name, exc_args, text=None):
        self.exc_module, self.exc_cls_name = exc_module, exc_cls_name
        self.exc_args, self.text = tuple(exc_args), text
        super().__init__(exc_module, exc_cls_name, self.exc_args, text)

    def __str__(self):
        return str(self.text)

    def restore(self):
        """An exception of that class name, made anew (not the class itself)."""
        from ..result import _remote_class  # the result module reads exceptions with this one
        return _remote_class(self.exc_module, self.exc_cls_name)(*self.exc_args)
