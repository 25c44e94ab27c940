"""``python -m miniq``: parse the arguments, load the ``-A`` app, call the
library, print. No supervision or SQL lives here, so every command is a
function to test in-process or as a subprocess.
"""
import contextlib
import importlib.util
import json
import os
import signal
import sys
import textwrap
import time
from argparse import SUPPRESS, ArgumentParser, ArgumentTypeError, Namespace
from datetime import datetime
from typing import Any, List, Optional

from . import __version__
from .app import Miniq, load_app
from .cli_worker import (add_loglevel, add_options, daemon_settings, pid_file, split,
                         start_logging, worker)
from .control import Control, Inspect, known_queues, live_nodes
from .exceptions import ImproperlyConfigured


def _common_options() -> ArgumentParser:
    """What every command takes, before or after its name (as Celery's: -A, -b, --workdir)."""
    common = ArgumentParser(add_help=False)
    common.add_argument("-A", "--app",
                        default=SUPPRESS,
                        help="the app: module, module:attribute or module.attribute")
    common.add_argument("-j", "--json",
                        action="store_true",
                        default=SUPPRESS,
                        help="print JSON for scripts instead of text for people")
    common.add_argument("-b", "--broker", default=SUPPRESS,
                        help="the database URL, over the app's (or BROKER_URL, as Celery's)")
    common.add_argument("--workdir", default=SUPPRESS, help="change to this folder first")
    common.add_argument("--result-backend", default=SUPPRESS,
                        help="as Celery's (or RESULT_BACKEND): the broker's file, or rpc://")
    common.add_argument("--config", default=SUPPRESS,
                        help="a module of settings (or CONFIG_MODULE), as Celery's")
    return common


def _add_beat_options(beat):
    """Celery's beat options: those of its service unit honoured, the others refused."""
    add_loglevel(beat, "WARNING")  # as Celery 5.7's beat
    beat.add_argument("-f", "--logfile", metavar="PATH", help="log to PATH instead of stderr")
    beat.add_argument("--pidfile", metavar="PATH", help="write beat's pid to PATH; refuse to"
                      " start if it names a live process")
    beat.add_argument("-S", "--scheduler", help="Celery's default only: beat_scheduler")
    beat.add_argument("-s", "--schedule", metavar="PATH",
                      help="no effect: beat's runs are kept in the database file")
    beat.add_argument("--max-interval", type=float, metavar="S",
                      help="no effect: beat sleeps until the next run is due")


# Celery's commands and options that miniq lacks, and what to do instead
LACKED = {
    "events": "miniq sends no events: `miniq dashboard` shows the tasks",
    "multi": "run one `miniq worker` for each service (systemd, supervisor)",
    "shell": "import the app in python", "amqp": "the file is the broker",
    "list": "the file is the broker: it has no bindings", "migrate": "the file is the broker",
    "report": "miniq --version, python --version", "upgrade": "nothing to upgrade",
    "graph": "miniq has no bootsteps", "logtool": "read the log with grep",
    "-D": "miniq's worker stays in the foreground: run it as a service",
    "-I": "set app.conf.include", "--uid": "a service's User=", "--gid": "a service's Group=",
}
LACKED.update({"--detach": LACKED["-D"], "--include": LACKED["-I"]})


class _Parser(ArgumentParser):
    """argparse's, but a command or option of Celery's that miniq lacks is named so."""

    def error(self, message):
        for said in ("invalid choice: ", "unrecognized arguments: "):  # then what was given
            given = message.partition(said)[2].split(" (choose")[0].replace("=", " ")
            lacked = [word for word in given.replace("'", "").split() if word in LACKED]
            if said in message and lacked and self.prog.split()[1:] in ([], ["worker"]):
                message = f"{lacked[0]}: Celery's, not miniq's ({LACKED[lacked[0]]})"
        super().error(message)


def build_parser() -> ArgumentParser:
    """The ``miniq`` command line: -A and --json, then one subcommand."""
    common = _common_options()
    parser = _Parser(prog="miniq",
                            parents=[common],
                            allow_abbrev=False,  # as Celery's: --max-mem is no option
                            description="A task queue for one machine, on one SQLite file.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name, text, under=commands):
        return under.add_parser(name, parents=[common], help=text, description=text,
                                allow_abbrev=False)

    add_options(command("worker", "start a worker"))
    _add_beat_options(command("beat", "send the periodic tasks of app.conf.beat_schedule"))
    _add_remote_options(command("status", "ping the live workers, as Celery's"))
    inspect = command("inspect", "ask the live workers, as Celery's inspect")
    inspect.add_argument("what", choices=ASKED)
    _add_remote_options(inspect)
    _add_control(command("control", "shut workers down, or revoke or terminate tasks"), command)
    purge = command("purge", "delete queued tasks")
    purge.add_argument("-Q", "--queues", help="only these comma-separated queues")
    purge.add_argument("-f", "--force", action="store_true", help="do not ask")
    result = command("result", "wait for a task and print its result, as Celery's")
    result.add_argument("task_id")
    result.add_argument("--wait", action="store_true", help="accepted: it waits anyway")
    result.add_argument("--timeout", type=float, help="give up after this many seconds")
    result.add_argument("--traceback", action="store_true",
                        help="print the task's traceback instead of its result")
    result.add_argument("-t", "--task", metavar="NAME",
                        help="the task's name: accepted, as Celery's; one file holds every result")
    _add_call_options(command("call", "send a task by name and print its id"))
    dashboard = command("dashboard", "serve the web dashboard: the page and its JSON API")
    dashboard.add_argument("--port", type=_port, default=5555,
                           help="default 5555, as Flower's; 0: any free one")
    dashboard.add_argument("--address", default="127.0.0.1",
                           help="where to listen (default 127.0.0.1: this machine only)")
    dashboard.add_argument("--basic-auth", metavar="USER:PASSWORD",
                           help="ask for this login (also MINIQ_DASHBOARD_AUTH); needed to"
                                " listen on any address but this machine's")
    return parser


def _port(text):
    """A TCP port, 0 to 65535 (0: any free one)."""
    if not text.isdigit() or int(text) > 65535:
        raise ArgumentTypeError(f"a port is a number from 0 to 65535, not {text!r}")
    return int(text)


# inspect commands the workers answer, as Celery's
ASKED = ("ping", "active", "scheduled", "reserved", "registered", "stats", "active_queues")


def _add_remote_options(parser):
    """Celery's -d and -t for the commands that address workers."""
    parser.add_argument("-d", "--destination", metavar="NODES",
                        help="comma-separated node names of the workers to address")
    parser.add_argument("-t", "--timeout", type=float, default=1.0,
                        help="accepted, as Celery's: the database answers at once")


def _add_control(control, command):
    """control shutdown | revoke ID... | terminate SIGNAL ID..., as Celery's."""
    kinds = control.add_subparsers(dest="what", metavar="WHAT", required=True)
    _add_remote_options(command("shutdown", "warm shutdown of the live workers", kinds))
    revoke = command("revoke", "queued tasks never run; with --terminate, running ones end",
                     kinds)
    revoke.add_argument("ids", nargs="+", metavar="ID")
    revoke.add_argument("--terminate", action="store_true", help="end the running ones too")
    revoke.add_argument("--signal", help="with --terminate: the signal (default SIGTERM)")
    terminate = command("terminate", "revoke --terminate with this signal", kinds)
    terminate.add_argument("signal")
    terminate.add_argument("ids", nargs="+", metavar="ID")
    terminate.set_defaults(terminate=True)


def _add_call_options(call):
    """call's arguments and options, Celery's names."""
    call.add_argument("name")
    call.add_argument("-a", "--args", default="[]", help="JSON list of positional arguments")
    call.add_argument("-k", "--kwargs", default="{}", help="JSON object of keyword arguments")
    call.add_argument("--eta", type=iso8601,
                      help="not before this ISO 8601 time (without a zone: UTC)")
    call.add_argument("--countdown", type=float, help="not before this many seconds from now")
    call.add_argument("--expires", type=seconds_or_iso8601,
                      help="not after this: seconds from now, or an ISO 8601 time")
    call.add_argument("--queue", help="the queue (default: the task's route)")
    call.add_argument("--serializer", choices=("json",), default="json",
                      help="json, miniq's only serializer")


def iso8601(text):
    """argparse type for --eta: an ISO 8601 time, such as 2030-01-31T09:00:00+01:00."""
    try:  # fromisoformat reads a final Z only from Python 3.11
        return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise ArgumentTypeError(f"must be an ISO 8601 time, not {text!r}") from None


def seconds_or_iso8601(text):
    """argparse type for --expires: seconds from now, or an ISO 8601 time."""
    with contextlib.suppress(ValueError):
        return float(text)
    return iso8601(text)


GLOBAL_VARIABLES = (("broker", ("BROKER_URL", "CELERY_BROKER"), "CELERY_BROKER_URL"),
                    ("result_backend", ("RESULT_BACKEND", "CELERY_RESULT_BACKEND"),
                     "CELERY_RESULT_BACKEND"),
                    ("config", ("CONFIG_MODULE", "CELERY_CONFIG"), "CELERY_CONFIG_MODULE"))
TRUE = ("1", "true", "t", "yes", "y", "on")  # as click reads a flag's variable
DAEMON_OPTIONS = {"DETACH", "EXECUTABLE", "GID", "HOSTNAME", "LOGFILE", "LOGLEVEL", "PIDFILE",
                  "SCHEDULER", "UID", "UMASK"}
CELERY_OPTIONS = {  # of Celery's worker and beat, as its variables name them
    "worker": DAEMON_OPTIONS | {
        "AUTOSCALE", "BEAT", "CONCURRENCY", "DISABLE_PREFETCH", "EXCLUDE_QUEUES",
        "HEARTBEAT_INTERVAL", "INCLUDE", "MAX_MEMORY_PER_CHILD", "MAX_TASKS_PER_CHILD",
        "OPTIMIZATION", "POOL", "POOL_START_METHOD", "PREFETCH_MULTIPLIER", "PURGE", "QUEUES",
        "SCHEDULE_FILENAME", "SOFT_TIME_LIMIT", "STATEDB", "TASK_EVENTS", "TIME_LIMIT",
        "WITHOUT_GOSSIP", "WITHOUT_HEARTBEAT", "WITHOUT_MINGLE"},
    "beat": DAEMON_OPTIONS | {"MAX_INTERVAL", "REMOTE_CONTROL", "SCHEDULE"}}


def _environment_options(command, name, argv):
    """As Celery's command line: each option not typed comes from its variable, such
    as CELERY_WORKER_CONCURRENCY for the worker's --concurrency, as the words to parse;
    one for an option of Celery's that miniq lacks is refused, as the option would be
    (others, such as a setting's name, are no option: Celery ignores them too)."""
    prefix, typed = f"CELERY_{name.upper()}_", {word.split("=")[0] for word in argv}
    typed |= {word[:2] for word in argv if word[:1] == "-" and word[:2] != "--"}
    options = {option[2:].replace("-", "_").upper(): (option, action)
               for action in command._actions for option in action.option_strings
               if option.startswith("--")}
    words = []
    for variable in sorted(key for key in os.environ if key.startswith(prefix)):
        suffix = variable[len(prefix):]
        if suffix not in CELERY_OPTIONS[name]:  # a setting's name, say: no option
            continue
        option, action = options.get(suffix, (None, None))
        if option is None:
            command.error(f"{variable}: miniq's {name} has no such option")
        if typed & set(action.option_strings):
            continue
        value = os.environ[variable]
        if action.nargs != 0:
            words += [option, value]
        elif value.lower() in TRUE:
            words.append(option)
    return words


def main(argv: Optional[List[str]] = None, app: Optional[Miniq] = None) -> int:
    """Run one command line, for the ``-A`` app or the one given; return its exit status."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.command in ("worker", "beat"):  # no arguments of their own to miss
        command = parser._subparsers._group_actions[0].choices[args.command]
        command.parse_args(_environment_options(command, args.command, argv), args)
    if app is not None:  # app.start(): children import the module that made it
        args.app, app = _started_path(app)
    args.app = (getattr(args, "app", None) or os.environ.get("APP")  # as Celery's
                or os.environ.get("CELERY_APP"))
    if not args.app:
        parser.error("the -A/--app option is required (e.g. -A proj)")
    # as Celery's -b, --result-backend and --config (or their variables): over any other
    # setting, the children's too
    for option, names, setting in GLOBAL_VARIABLES:
        value = getattr(args, option, None) or next(filter(None, map(os.environ.get, names)), None)
        setattr(args, option, value)
        if value:
            os.environ[setting] = value
    if getattr(args, "workdir", None):
        os.chdir(args.workdir)
    cwd = os.getcwd()
    if cwd not in sys.path:  # as Celery: the app module is found from here
        sys.path.insert(0, cwd)
    try:
        if app is None:
            app = load_app(args.app)
        else:
            app.import_includes()
        app.conf.broker_url = args.broker or app.conf.broker_url
        if args.command in READERS and not os.path.exists(app.broker.path):  # a typo's, most
            return _error(f"no database at {app.broker.path}: check -b and the app's broker")
        return COMMANDS[args.command](app, args)
    except ImproperlyConfigured as exc:
        return _error(exc)
    except KeyboardInterrupt:  # Ctrl-C at a prompt, a wait or an import: as Celery's
        print("Aborted!", file=sys.stderr)
        return 1


def _started_path(app):
    """(-A path, app) for app.start(): the module that made it, whose app runs the
    worker too (``python -m proj.celery``: the tasks its includes make go to the app of
    ``proj.celery`` as a module); a script's, by the name its tasks take (Celery's app
    name), as a module if one has that name, else as ``__main__``, which forked
    children share."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if app.origin != "__main__" or spec is not None:
        return app.origin if app.origin != "__main__" else spec.name, None
    try:
        known = bool(app.main) and importlib.util.find_spec(app.main) is not None
    except (ImportError, ValueError):  # a dotted name whose package is not there
        known = False
    return app.main if known else "__main__", app


def beat(app, args):
    """Send periodic tasks until Ctrl-C or SIGTERM."""
    from .beat import Beat
    daemon_settings(app, args, "beat")
    if args.scheduler:  # refused, as the setting, unless Celery's default
        app.conf.beat_scheduler = args.scheduler
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop as on Ctrl-C
    with pid_file(args.pidfile), contextlib.suppress(KeyboardInterrupt):
        start_logging(args.loglevel, args.logfile, app.conf)
        beat = Beat(app)
        print(f"miniq beat for {args.app}\n  database:    {app.broker.path}\n"  # as Celery's
              f"  entries:     {len(beat.entries)}", flush=True)  # banner: at any level
        beat.run()
    return 0


def status(app, args):
    """As Celery's: a ping of the live workers, ``->  node: OK`` for each, then how many;
    exit status 1 if none replied."""
    asked = Inspect(split(args.destination) or None, args.timeout, app=app)
    return _say(app, args, asked.ping(), show=False)


def inspect(app, args):
    """Ask the live workers, as Celery's inspect: each reply under its node name."""
    asked = Inspect(split(args.destination) or None, args.timeout, app=app)
    return _say(app, args, getattr(asked, args.what)())


def control(app, args):
    """Shut the live workers down (warm), or revoke or terminate tasks by id."""
    if args.what == "shutdown":
        replies = Control(app).shutdown(split(args.destination) or None, reply=True)
        return _say(app, args, {node: reply for one in replies for node, reply in one.items()})
    if args.signal and not args.terminate:
        return _error("--signal is the signal of --terminate; add --terminate")
    try:  # the database holds the flag, for whichever worker runs the task
        Control(app).revoke(args.ids, terminate=args.terminate, signal=args.signal)
    except ValueError as exc:
        return _error(exc)
    ended = f"; running ones end by {args.signal or 'SIGTERM'}" if args.terminate else ""
    reply = {"ok": f"tasks {', '.join(args.ids)} flagged as revoked{ended}"}
    if not _emit(args, reply):
        print(reply["ok"])
    return 0


def dashboard(app, args):
    """Serve the dashboard until Ctrl-C or SIGTERM."""
    from .dashboard import Server  # an extra that only this command needs
    auth = args.basic_auth or os.environ.get("MINIQ_DASHBOARD_AUTH") or None  # "": none
    try:
        server = Server(app, args.address, args.port, auth)
    except OSError as exc:
        return _error(f"cannot listen on {args.address} port {args.port}: {exc.strerror}")
    host, port = server.server_address[:2]
    print(f"miniq dashboard: http://{f'[{host}]' if ':' in host else host}:{port}/", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop as on Ctrl-C
    with contextlib.suppress(KeyboardInterrupt), server:
        server.serve_forever()
    return 0


def _say(app, args, replies, show=True):
    """Print the workers' replies as Celery's commands do (with --json, as they are);
    exit status 1 if none replied or one replied with an error."""
    if not replies:
        live = args.destination and [node for node, *_ in live_nodes(app)]
        why = f"none of them is {args.destination}; live: {', '.join(live)}" if live \
            else "no worker is live on this database"
        return _error(f"no nodes replied: {why}", 1)
    if not _emit(args, replies):
        for node, reply in replies.items():
            status, text = _pretty(reply)
            print(f"->  {node}: {status}")
            if show:  # as Celery's status, which shows no reply
                print(textwrap.indent(text, "    "))
        print(f"\n{len(replies)} node{'' if len(replies) == 1 else 's'} online.")
    return int(any(isinstance(reply, dict) and "error" in reply for reply in replies.values()))


def _pretty(reply):
    """("OK" or "ERROR", text) for a list or an {"ok"} or {"error"} reply, as Celery's
    commands print them (the text of the latter indented once more)."""
    if isinstance(reply, list):
        return "OK", "\n".join(f"* {item}" for item in reply) or "- empty -"
    if "ok" not in reply and "error" not in reply:  # stats(): the whole dict
        return "OK", json.dumps(reply, sort_keys=True, indent=4, default=str)
    status, text = ("OK", reply["ok"]) if "ok" in reply else ("ERROR", reply["error"])
    return status, textwrap.indent(text, "    ")


def purge(app, args):
    """Delete queued tasks, after asking unless --force; exit status 1 if refused."""
    queues = split(args.queues) or known_queues(app.conf)  # as Celery's: not every queue
    if not args.force:
        where = ", ".join(queues)
        count = app.broker.purge(queues, dry_run=True)
        try:
            answer = input(f"Delete {count} queued task{'' if count == 1 else 's'} of {where}?"
                           " There is no undo. [y/N] ")
        except EOFError:  # no one to ask (cron, CI): that is a no
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("Nothing purged.")
            return 1
    count, some = app.broker.purge(queues), "queue" if len(queues) == 1 else "queues"
    if not _emit(args, {"purged": count}):  # as Celery's
        print(f"Purged {count} message{'' if count == 1 else 's'} from {len(queues)} known task"
              f" {some}." if count else f"No messages purged from {len(queues)} {some}.")
    return 0


def result(app: Miniq, args: Namespace) -> int:
    """As Celery's: wait until the task is done and print its value (its error and
    traceback, exit status 1, if it failed); with --traceback, print that at once."""
    res = app.AsyncResult(args.task_id)
    if app.broker.state(res.id) is None:  # else it would read as PENDING forever
        return _error(f"unknown task {args.task_id}: never sent, or its result is gone", 1)
    shown = {"id": res.id, "state": res.state}
    if args.traceback:
        if not _emit(args, {**shown, "traceback": res.traceback}):
            print(res.traceback or "", end="")
        return 0
    if not _wait(res, args.timeout):
        return _error(f"task {args.task_id} not done after {args.timeout}s", 1)
    value, failed = res.info, res.state != "SUCCESS"
    if isinstance(value, BaseException):
        value = f"{type(value).__name__}: {value}"
    if not _emit(args, {**shown, "state": res.state, "result": value}):
        print(res.traceback or f"{value}\n", end="", file=sys.stderr) if failed else print(value)
    return 1 if failed else 0


def _wait(res: Any, timeout: Optional[float]) -> bool:
    """Wait until res is ready or timeout seconds pass; say whether it is ready."""
    deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
    drawn = False
    while not res.ready() and time.monotonic() < deadline:
        drawn = _draw_progress(res) or drawn
        time.sleep(0.1)
    if drawn:  # end the bar's line, or the shell prompt would follow it
        print(file=sys.stderr)
    return res.ready()


def _draw_progress(res: Any) -> bool:
    """On a terminal, draw a bar for PROGRESS meta ({"current", "total"}); say if it did."""
    running = sys.stderr.isatty() and res.state not in ("PENDING", "STARTED")
    info = res.info if running else None
    has_progress = isinstance(info, dict) and {"current", "total"} <= info.keys()
    if not has_progress:
        return False
    done = int(30 * info["current"] / max(1, info["total"]))
    bar = "#" * done + "." * (30 - done)
    print(f"\r[{bar}] {info['current']}/{info['total']}", end="", file=sys.stderr, flush=True)
    return True


def call(app: Miniq, args: Namespace) -> int:
    """Send a task by name, with JSON arguments, and print its id."""
    try:
        call_args = json.loads(args.args)
        call_kwargs = json.loads(args.kwargs)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        return _error(f"--args and --kwargs must be JSON: {exc}")
    if not isinstance(call_args, list) or not isinstance(call_kwargs, dict):
        return _error("--args must be a JSON list and --kwargs a JSON object")
    if args.name not in app.tasks:  # still sent: a worker with other code may know it
        print(f"miniq: warning: {args.name!r} is not a task of {args.app}; sent anyway",
              file=sys.stderr)
    try:  # one its function cannot take is refused, as delay() refuses it
        if args.name in app.tasks:
            app.tasks[args.name]._check_arguments(call_args, call_kwargs)
        sent = app.send_task(args.name,
                             call_args,
                             call_kwargs,
                             queue=args.queue,
                             countdown=args.countdown,
                             eta=args.eta,
                             expires=args.expires)
    except (TypeError, ValueError, OverflowError) as exc:  # bad JSON, a time out of range
        return _error(exc)
    if not _emit(args, {"id": sent.id}):
        print(sent.id)
    return 0


def _error(message, code=2):
    """Print an error the way argparse does, and return the exit status."""
    print(f"miniq: error: {message}", file=sys.stderr)
    return code


def _emit(args, data):
    """Print data as JSON when --json was given; say whether it did."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))
        return True
    return False


READERS = {"status", "inspect", "result"}  # commands that read a database, never make one
COMMANDS = {f.__name__: f for f in (worker, beat, status, inspect, control, purge, result, call,
                                    dashboard)}
