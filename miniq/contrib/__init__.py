"""Celery's ``celery.contrib`` modules that projects import, for the same imports here."""
