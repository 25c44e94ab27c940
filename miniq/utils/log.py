"""``get_task_logger``, where task modules import it from in Celery
(``celery.utils.log``), and a worker child's logging as Celery's: the worker's
log format, a task's lines naming the task, and what a task prints in the log."""
import io
import logging
import sys

TASK_FORMAT = ("[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]:"
               " %(message)s")  # Celery's worker_task_log_format


def get_task_logger(name: str) -> logging.Logger:
    """The logger of a task module, usually ``get_task_logger(__name__)``: under
    ``celery.task``, as Celery's, whose own names it refuses."""
    if name in ("celery", "celery.task"):
        raise RuntimeError(f"Logger name {name!r} is reserved!")
    logger = logging.getLogger(name)
    if logger.parent is logging.root:
        logger.parent = logging.getLogger("celery.task")
    return logger


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


class TaskFormatter(logging.Formatter):
    """The task loggers' format, as Celery's: it names the running task ('???' if none)."""

    def format(self, record):
        from ..task import _running  # the task this child runs, if any
        if _running.task is not None:
            record.task_name, record.task_id = _running.task.name, _running.request.id
        else:
            record.__dict__.setdefault("task_name", "???")
            record.__dict__.setdefault("task_id", "???")
        return super().format(record)


class LogWriter(io.TextIOBase):
    """sys.stdout and sys.stderr of a child, as Celery's worker_redirect_stdouts: each
    line a task prints is a log record at that level."""

    def __init__(self, level, stream):
        self.level, self.stream, self.line, self.busy = level, stream, "", False

    def write(self, text):
        if self.busy:  # logging itself writes here (no handler of its own): pass it on
            return self.stream.write(text)
        self.busy = True
        try:
            *lines, self.line = (self.line + text).split("\n")
            for line in lines:
                logging.getLogger("celery.redirected").log(self.level, line)
        finally:
            self.busy = False
        return len(text)

    def flush(self):  # a line without its newline, printed with flush=True or as a task ends
        if self.line:
            self.write("\n")

    def fileno(self):
        return self.stream.fileno()

    def writable(self):
        return True

    encoding = property(lambda self: self.stream.encoding)

    def __getattr__(self, name):  # buffer, errors, ...: the stream's
        return getattr(self.stream, name)


def log_as_celery(conf, loglevel, fmt, inherited=False, child=True):
    """The worker's logging, unless a setup_logging receiver took it over, as Celery's:
    the root logger's handler in the worker's format and date format (the app's own stays if
    worker_hijack_root_logger is off), at -l's level; the task loggers', under
    ``celery.task``, which pass nothing on to the root's, in the task format; in a
    child, a task's prints as log lines. A forked child inherits all but the last.
    Returns the task format."""
    task_fmt = conf.get("worker_task_log_format") or TASK_FORMAT
    if not inherited:
        root, tasks = logging.getLogger(), logging.getLogger("celery.task")
        hijack = conf.get("worker_hijack_root_logger", True)
        if hijack or not root.handlers:
            logging.basicConfig(format=fmt, datefmt=conf.get("worker_log_datefmt"), force=True)
        if hijack or not tasks.handlers:
            tasks.handlers = [logging.StreamHandler()]
            tasks.handlers[0].setFormatter(TaskFormatter(task_fmt,
                                                         conf.get("worker_task_log_datefmt")))
        for logger in (root, tasks):
            logger.setLevel(str(loglevel).upper())
        tasks.propagate = False
    if child and conf.get("worker_redirect_stdouts", True):
        level = str(conf.get("worker_redirect_stdouts_level") or "WARNING").upper()
        sys.stdout = LogWriter(logging.getLevelName(level), sys.stdout)
        sys.stderr = LogWriter(logging.getLevelName(level), sys.stderr)
    return task_fmt
