"""Celery's ``celery.contrib.django``."""
