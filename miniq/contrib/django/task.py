"""Celery's ``celery.contrib.django.task``: the task class of a Django project."""
from ...fixups import DjangoTask

__all__ = ["DjangoTask"]
