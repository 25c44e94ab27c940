"""Helpers under the paths Celery's task modules import them from."""
