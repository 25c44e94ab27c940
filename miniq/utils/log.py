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
    """The worker's format; while a task runs, the task format, which names it."""

    def __init__(self, fmt, task_fmt):
        super().__init__(fmt)
        self.task = logging.Formatter(task_fmt)

    def format(self, record):
        from ..task import _running  # the task this child runs, if any
        if _running.task is None or record.name.startswith(("miniq.", "celery.redirected")):
            return super().format(record)
        record.task_name, record.task_id = _running.task.name, _running.request.id
        return self.task.format(record)


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


def log_as_celery(conf, loglevel, fmt, inherited=False):
    """A child's logging, unless a setup_logging receiver took it over: the root logger's
    (the app's own setup too, as worker_hijack_root_logger says), then the rest. A forked
    child has ``inherited`` its manager's root logger, after_setup_logger's handlers too:
    those in the worker's format (the worker's own) take the task format as well."""
    root = logging.getLogger()
    if not inherited and (conf.get("worker_hijack_root_logger", True) or not root.handlers):
        logging.basicConfig(level=loglevel.upper(), format=fmt, force=True)
    task_fmt = conf.get("worker_task_log_format") or TASK_FORMAT
    for handler in root.handlers:
        if getattr(handler.formatter, "_fmt", None) == fmt:
            handler.setFormatter(TaskFormatter(fmt, task_fmt))
    if conf.get("worker_redirect_stdouts", True):
        level = str(conf.get("worker_redirect_stdouts_level") or "WARNING").upper()
        sys.stdout = LogWriter(logging.getLevelName(level), sys.stdout)
        sys.stderr = LogWriter(logging.getLevelName(level), sys.stderr)
