"""The ``worker`` command: its options (miniq's, and Celery's that miniq honours or
accepts), then the pid file, log file and banner around the manager's run. cli.py
parses the command line and calls ``worker``; this module never imports cli.py.
"""
import contextlib
import functools
import logging
import os
import sys
from argparse import ArgumentTypeError

from .control import known_queues, node_format, nodename
from .exceptions import ImproperlyConfigured
from .task import emit
from .utils.log import log_as_celery
from .wake import pid_alive

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "FATAL")


def add_options(parser):
    """The worker's options: miniq's own, then Celery's that miniq honours or accepts."""
    parser.add_argument("-c", "--concurrency", type=children,
                        help="child processes (default, or 0: one a CPU)")
    parser.add_argument("-Q", "--queues", help="comma-separated queues to serve")
    add_loglevel(parser, "WARNING")
    parser.add_argument("--start-method", "--pool-start-method",  # Celery 5.7's name
                        choices=("fork", "forkserver", "spawn"),
                        help="how children start (default: fork on Linux)")
    parser.add_argument("-B", "--beat", action="store_true", help="also send periodic tasks")
    honoured = parser.add_argument_group("Celery's options that miniq honours")
    for flags, options, text in HONOURED:
        honoured.add_argument(*flags, **options, help=text)
    ignored = parser.add_argument_group("Celery's options accepted with no effect on one machine")
    for flags, takes, why in NO_EFFECT:
        kind = ({"action": "store_true"} if takes is None
                else {"metavar": takes} if isinstance(takes, str) else {"choices": takes})
        ignored.add_argument(*flags, **kind, help=f"no effect: {why}")


def add_loglevel(parser, default):
    """-l/--loglevel: worker and beat differ only in the default."""
    parser.add_argument("-l", "--loglevel",
                        type=str.upper,
                        choices=LEVELS,
                        default=default,
                        help=f"least severe messages logged (default: {default})")


def positive_int(text):
    """argparse type for -c: a worker with no children would never run a task."""
    if not text.isdigit() or int(text) < 1:
        raise ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return int(text)


def children(text):
    """argparse type for -c: as Celery's, 0 is one child a CPU."""
    if not text.isdigit():
        raise ArgumentTypeError(f"must be a whole number, not {text!r}")
    return int(text) or os.cpu_count() or 1


def positive_float(text):
    """argparse type for the time limits: seconds, more than none and finite."""
    with contextlib.suppress(ValueError):
        if 0 < float(text) < float("inf"):
            return float(text)
    raise ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")


def autoscale(text):
    """argparse type for --autoscale MAX,MIN: the larger, as Celery's, the children miniq runs."""
    high, _, low = text.partition(",")
    if low and not low.isdigit():
        raise ArgumentTypeError(f"must be MAX,MIN in children, not {text!r}")
    return max(positive_int(high), int(low or 0))


POOLS = ("prefork", "processes")  # Celery's names for what miniq has: child processes


# Celery's worker options that miniq honours: (flags, argparse options, --help text).
HONOURED = (
    (["-X", "--exclude-queues"],
     {"metavar": "QUEUES"},
     "comma-separated queues not to serve, of -Q's or else the default queue"),
    (["-P", "--pool"],
     {"default": "prefork"},
     f"{' or '.join(POOLS)}: miniq's only pool, of child processes"),
    (["--autoscale"],
     {"type": autoscale, "metavar": "MAX,MIN"},
     "run MAX children (miniq does not shrink the pool)"),
    (["--max-tasks-per-child"],
     {"type": positive_int, "metavar": "N"},
     "replace a child after N tasks (worker_max_tasks_per_child)"),
    (["--max-memory-per-child"],
     {"type": positive_int, "metavar": "KIB"},
     "replace a child whose memory passes KIB after a task (worker_max_memory_per_child)"),
    (["--prefetch-multiplier"],
     {"type": positive_int, "metavar": "N"},
     "claim up to N tasks a child ahead of the idle children (worker_prefetch_multiplier)"),
    (["--disable-prefetch"],
     {"action": "store_true", "default": None},
     "claim tasks only for idle children (worker_disable_prefetch)"),
    (["--time-limit"],
     {"type": positive_float, "metavar": "S"},
     "kill a task running longer than S seconds (task_time_limit)"),
    (["--soft-time-limit"],
     {"type": positive_float, "metavar": "S"},
     "raise SoftTimeLimitExceeded in a task after S seconds (task_soft_time_limit)"),
    (["-n", "--hostname"],
     {"metavar": "NAME"},
     "the node name inspect and control replies give this worker and its tasks see as"
     " self.request.hostname (default celery@%%h); %%h, %%n and %%d expanded as by Celery"),
    (["-f", "--logfile"],
     {"metavar": "PATH"},
     "log to PATH instead of stderr (the children's stderr too); %%n, %%h, %%d and %%p"
     " expanded as by Celery, %%i and %%I as in the manager (0 and nothing): the children"
     " write into the manager's file"),
    (["--pidfile"],
     {"metavar": "PATH"},
     "write the worker's pid to PATH, with --logfile's expansions; refuse to start if it"
     " names a live process"),
    (["--scheduler"],
     {"metavar": "CLASS"},
     "-B's scheduler: Celery's default only (beat_scheduler)"),
    (["--purge", "--discard"],
     {"action": "store_true"},
     "delete the served queues' queued tasks before starting"),
)


# Celery's worker options that mean nothing on one machine: (flags, takes, why).
# takes: None for a switch, else the metavar of any value or the values Celery takes.
NO_EFFECT = (
    (["-E", "--task-events", "--events"], None, "miniq sends no monitoring events"),
    (["-O", "--optimization"], ("default", "fair"),
     "children take a task only when idle, as with -O fair"),
    (["--without-gossip"], None, "there are no other machines to gossip with"),
    (["--without-mingle"], None, "there are no other machines to sync with"),
    (["--without-heartbeat"], None, "miniq's own liveness record stays on"),
    (["--heartbeat-interval"], "S", "miniq sends no event heartbeats"),
    (["-s", "--schedule-filename", "--schedule"], "PATH", "-B's runs are kept in the database"),
    (["-S", "--statedb"], "PATH", "revoked tasks are kept in the database"),
)


# Worker options that set app.conf, as Celery's do: after celeryd_init, whose receivers'
# settings they override.
CONF_OPTIONS = {
    "max_tasks_per_child": "worker_max_tasks_per_child",
    "max_memory_per_child": "worker_max_memory_per_child",
    "prefetch_multiplier": "worker_prefetch_multiplier",
    "disable_prefetch": "worker_disable_prefetch",
    "time_limit": "task_time_limit",
    "soft_time_limit": "task_soft_time_limit",
    "scheduler": "beat_scheduler",
}


def daemon_settings(app, args, command):
    """As Celery's worker and beat: a --pidfile or --logfile not typed comes from app.conf
    (``worker_pidfile``, ``beat_logfile``); its user, group, umask and executable, which
    miniq's commands do not change, are refused there as on the command line."""
    for option in ("pidfile", "logfile"):
        if getattr(args, option) is None:
            setattr(args, option, app.conf.get(f"{command}_{option}"))
    for option in ("uid", "gid", "umask", "executable"):
        if app.conf.get(f"{command}_{option}") is not None:
            raise ImproperlyConfigured(
                f"{command}_{option} is not supported: miniq's {command} runs as the user,"
                " with the umask and the Python, that start it (a service's User=, say)")


def worker(app, args):
    """Check the options, print the banner, then run the worker until it is stopped."""
    from .worker import Worker
    daemon_settings(app, args, "worker")
    if args.pool not in POOLS:
        raise ImproperlyConfigured(f"-P {args.pool}: miniq's only pool is child processes"
                                   f" ({' or '.join(POOLS)})")
    node = nodename(args.hostname)
    args.pidfile, args.logfile = (path and node_format(path, node)
                                  for path in (args.pidfile, args.logfile))
    concurrency = args.autoscale or args.concurrency
    manager = Worker(app, args.app, concurrency, functools.partial(_settings, app, args, node),
                     args.start_method, args.loglevel, beat=args.beat, hostname=node,
                     options=vars(args))
    app.broker.db  # noqa: B018 - open the file first: a setup error prints no banner
    with pid_file(args.pidfile):
        start_logging(args.loglevel, args.logfile, app.conf)
        _warn_no_effect(args)
        emit("_worker_set_up", manager)
        if args.purge:
            count = app.broker.purge(manager.queues)
            print(purged(count), flush=True)
        _print_banner(app, args, manager, node)
        _warn_celery_tasks()
        status = manager.run()
    if status == 0:  # as Celery: after a warm shutdown, not a cold one
        emit("_worker_shutdown", manager)
    if manager.restart and status == 0:
        _restart()
    return status


def _warn_no_effect(args):
    """Name the options given that change nothing here, where Celery's would (not those
    that turn off what miniq has not, nor -O fair, which is how it works)."""
    for flags, _, why in NO_EFFECT:
        long = next(flag for flag in flags if flag.startswith("--"))  # argparse's dest
        value = getattr(args, long[2:].replace("-", "_"))
        if value and value != "fair" and not flags[0].startswith("--without"):
            logging.getLogger("miniq.worker").warning("%s: no effect (%s)", flags[0], why)


def _warn_celery_tasks():
    """Name the tasks that modules made with Celery's decorators (an import not swapped):
    never registered here, they never run."""
    base = getattr(sys.modules.get("celery.app.task"), "Task", ())  # (): made none yet
    for name, module in list(sys.modules.items()) if "celery" in sys.modules else ():
        if name.partition(".")[0] in ("celery", "kombu") or not hasattr(module, "__dict__"):
            continue
        for attr, value in list(vars(module).items()):
            if _celery_task(value, base, name):
                logging.getLogger("miniq.worker").warning(
                    "%s.%s is a Celery task, not registered here: import from miniq", name, attr)


def _celery_task(value, base, module):
    """Whether a module's value is a task Celery's decorators made: its class, or the
    proxy they return until an app is finalized (looked at, not made real)."""
    try:
        if type(value).__module__ == "celery.local":  # not current_app, also a proxy
            made_by = object.__getattribute__(value, "_Proxy__local")
            return getattr(made_by, "__name__", "") in ("task_by_cons", "_task_from_fun")
        return type(value).__module__ == module and issubclass(type(value), base)
    except Exception:  # noqa: BLE001 - whatever a module holds, the worker starts
        return False


def command_line():
    """The command that started this process: Python's own record (3.10 on), else made
    again: -m and the module (miniq's, or a package's __main__), or a script's path."""
    argv = getattr(sys, "orig_argv", None)
    if argv is None:
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        start = ["-m", spec.name.rpartition(".__main__")[0] or spec.name] if spec else []
        argv = [sys.executable, *start, *sys.argv[1 if start else 0:]]
    return argv


def _restart():
    """As Celery's worker on SIGHUP: the same command again, in this process, so that
    it runs the code as it is now."""
    argv = command_line()
    logging.getLogger("miniq.worker").warning("restarting: %s", " ".join(argv))
    logging.shutdown()
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, *argv[1:]])


def _settings(app, args, node):
    """The command's options set in app.conf, as Celery's override what celeryd_init's
    receivers set there; then the queues it serves."""
    for option, key in CONF_OPTIONS.items():
        if getattr(args, option) is not None:
            app.conf[key] = getattr(args, option)
    queues = _served_queues(app, args)
    if app.conf.get("worker_direct"):  # as Celery's: a queue of its own, named after it
        queues.append(f"{node}.dq2")
    return queues


def _served_queues(app, args):
    """-Q's queues, or else the known ones (task_queues, or the default queue), minus
    -X's; refused if none is left."""
    queues = split(args.queues) or known_queues(app.conf)
    excluded = split(args.exclude_queues)
    served = [queue for queue in queues if queue not in excluded]
    if not served:
        raise ImproperlyConfigured(f"-X {args.exclude_queues} leaves no queue to serve"
                                   f" of {','.join(queues)}")
    return served


@contextlib.contextmanager
def pid_file(path):
    """Hold PATH as the worker's pid file while it runs; refuse one naming a live process.
    Our own pid there is stale: a container's worker is often pid 1 every time."""
    if not path:
        yield
        return
    old = _read_pid(path)
    if old not in (None, os.getpid()) and pid_alive(old):
        raise ImproperlyConfigured(f"pid file {path} names pid {old}, which is running:"
                                   " is this worker running already?")
    try:
        with open(path, "w") as f:
            f.write(f"{os.getpid()}\n")
    except OSError as exc:
        raise ImproperlyConfigured(f"cannot write the pid file: {exc}") from None
    try:
        yield
    finally:
        if _read_pid(path) == os.getpid():  # not a later worker's
            os.remove(path)


def _read_pid(path):
    """The pid a pid file holds; None if it is missing or holds none."""
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def start_logging(level, logfile=None, conf=None):
    """Log to stderr, or to logfile: it becomes the stderr of the manager and of
    every child, whatever the start method. As Celery's, in worker_log_format, over
    the app's own setup unless worker_hijack_root_logger is off."""
    from .worker import LOG_FORMAT
    conf = conf or {}
    fmt = conf.get("worker_log_format") or LOG_FORMAT
    if logfile:
        try:
            log = open(logfile, "a")
        except OSError as exc:
            raise ImproperlyConfigured(f"cannot open the log file: {exc}") from None
        with log:
            os.dup2(log.fileno(), sys.stderr.fileno())
    configure = functools.partial(log_as_celery, conf, level, fmt, child=False)
    if not emit("_setup_logging", level, logfile, fmt, configure):
        configure()


def _print_banner(app, args, manager, node):
    """What this worker is, at any log level, as Celery's banner."""
    node = [f"  node:        {node}"] if args.hostname else []
    node += [f"  beat entries: {len(manager.beat.entries)}"] if manager.beat else []
    tasks = [f"  . {name}" for name in sorted(app.tasks) if not name.startswith("celery.")]
    lines = [f"miniq worker for {args.app}",
             f"  database:    {app.broker.path}",
             f"  concurrency: {manager.concurrency}",
             f"  queues:      {','.join(manager.queues)}",
             *node,
             "[tasks]", *tasks]
    print("\n".join(lines), flush=True)  # one write: a reader of the log sees all or none


def split(text):
    """A comma-separated option's names; none if it was not given. An empty name is
    refused: ``-Q a,,b`` is a typo, and ``purge -Q ''`` must not mean every queue."""
    names = [] if text is None else text.split(",")
    if "" in names:
        raise ImproperlyConfigured(f"{text!r}: a queue name cannot be empty")
    return names


def purged(count):
    """What worker --purge says it did, as Celery's."""
    return f"purge: Erased {count} message{'' if count == 1 else 's'} from the queue."

