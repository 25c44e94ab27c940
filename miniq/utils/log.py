"""``get_task_logger``, where task modules import it from in Celery
(``celery.utils.log``): a task module's logger writes to the worker's log."""
import logging


def get_task_logger(name: str) -> logging.Logger:
    """The logger of a task module, usually ``get_task_logger(__name__)``."""
    return logging.getLogger(name)


get_logger = get_task_logger
