"""Helpers under the paths Celery's task modules import them from."""


def __getattr__(name):
    """``from celery.utils import uuid``: a random UUID string (late: result imports us)."""
    if name == "uuid":
        from ..result import new_id
        return new_id
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
