"""Tasks the tests send; worker children import this module as the app (-A tests.tasks)."""
import json
import os
import signal
import sys
import time

from miniq import Miniq, Task, states
from miniq.exceptions import SoftTimeLimitExceeded
from miniq.result import ResultSet
from miniq.utils.log import get_task_logger

app = Miniq("tests")  # broker: MINIQ_BROKER_URL, set per test by the fixtures
app.conf.update(json.loads(os.environ.get("MINIQ_TEST_CONF", "{}")))  # per-worker tuning
if os.environ.get("MINIQ_TEST_SLOW_IMPORT"):  # a child (not the manager) that takes long
    import multiprocessing  # to import its app: it says so in a file named so
    if multiprocessing.parent_process() is not None:
        open(f"{os.environ['MINIQ_TEST_SLOW_IMPORT']}.{os.getpid()}", "w").close()
        time.sleep(2)
if os.environ.get("MINIQ_TEST_MAX_PAGES"):  # a file that cannot grow past so many pages:
    import sqlite3  # the worker's disk is full then

    def _small_disk(*args, _connect=sqlite3.connect, **kwargs):
        db = _connect(*args, **kwargs)
        db.execute(f"PRAGMA max_page_count = {int(os.environ['MINIQ_TEST_MAX_PAGES'])}")
        return db
    sqlite3.connect = _small_disk
if os.environ.get("MINIQ_TEST_MAX_REPLY"):  # replies over this are refused, in the manager
    import miniq.worker  # and its children: an outcome over SQLite's limit, made smaller
    miniq.worker.MAX_REPLY = int(os.environ["MINIQ_TEST_MAX_REPLY"])
_hoard = []


class CustomError(Exception):
    """An exception type the test process must not import from the database."""


@app.task
def add(x, y):
    return x + y


@app.task
def pid():
    return os.getpid()


@app.task
def leave_a_thread():
    """Start a thread that never ends, not a daemon, and return this child's pid."""
    import threading
    threading.Thread(target=threading.Event().wait).start()
    return os.getpid()


@app.task
def sleep(seconds, value=None):
    time.sleep(seconds)
    return value if value is not None else os.getpid()


@app.task
def fail(message="boom"):
    raise ValueError(message)


@app.task
def fail_local():
    """Raises a class made in the call, which does not pickle."""
    class Local(KeyError):
        pass
    raise Local("local")


@app.task
def fail_custom(message="custom"):
    raise CustomError(message)


@app.task(exchange="media", routing_key="media.video")  # test_routing's task_queues bind it
def to_videos(x):
    return x


class Errors:
    class Nested(KeyError):
        """Found by its qualified name, Errors.Nested."""

    class TwoArgs(ValueError):
        """Made from two arguments, stored with one: it comes back as its builtin base."""

        def __init__(self, a, b):
            super().__init__(f"{a}:{b}")


@app.task
def fail_nested(two_args=False):
    raise Errors.TwoArgs(1, 2) if two_args else Errors.Nested("inner")


@app.task
def text_of(length):
    """A value of ``length`` characters, made from a small call."""
    return "x" * length


@app.task
def exit_now(code=3):
    os._exit(code)


@app.task
def fork_then_exit(pid_path, code=5, seconds=60):
    """Leaves a process of its own behind, which holds its child's pipes open (a helper
    daemon, pty.fork), then ends its child with ``code`` (or returns, if None)."""
    pid = os.fork()
    if pid == 0:
        time.sleep(seconds)
        os._exit(0)
    with open(pid_path, "a") as f:
        f.write(f"{pid} ")
    if code is None:
        return "forked"
    os._exit(code)


@app.task
def segfault():
    import ctypes
    ctypes.string_at(0)


@app.task
def kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(time_limit=1)
def busy_loop():
    while True:
        pass


@app.task(time_limit=1)
def stuck_in_c():
    import itertools
    return sum(itertools.repeat(1, 10 ** 12))  # one C call that never checks signals


@app.task(soft_time_limit=0.5, time_limit=5)
def soft_catch(seconds=3):
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "finished"


@app.task(soft_time_limit=0.5)
def soft_raise(seconds=3):
    time.sleep(seconds)


@app.task(time_limit=1)
def hard_limited(marker_path, seconds=10):
    try:
        time.sleep(seconds)
    finally:
        with open(marker_path, "w") as f:  # at the hard limit: the SystemExit's way out
            f.write("finally ran")


@app.task(time_limit=1)
def outlives_its_end(marker_path, then_return=False):
    """Swallows the SystemExit of its hard limit and goes on, or returns: too late."""
    while True:
        try:
            time.sleep(10)
        except SystemExit:
            with open(marker_path, "a") as f:
                f.write("swallowed ")
            if then_return:
                return "survived"


@app.task
def program_until_gate(gate):
    """Run a program that waits for the file ``gate`` (saying it runs, as wait_for_gate
    does); its exit status."""
    import subprocess
    code = (f"import os, time\nopen({gate!r} + '.running.0', 'w').close()\n"
            f"while not os.path.exists({gate!r}): time.sleep(0.01)")
    return subprocess.run([sys.executable, "-c", code], timeout=60).returncode


@app.task(bind=True)
def progress(self, n, pause=0.0):
    for i in range(n):
        self.update_state(state="PROGRESS", meta={"current": i, "total": n})
        time.sleep(pause)
    return {"id": self.request.id, "done": n}


@app.task(bind=True)
def until_aborted(self, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if self.is_aborted():
            return "stopped"
        time.sleep(0.01)
    return "not aborted"


@app.task(bind=True)
def request_info(self, *args, **kwargs):
    return {"id": self.request.id, "args": list(self.request.args),
            "kwargs": self.request.kwargs, "retries": self.request.retries}


@app.task
def nested_get():
    return add.delay(1, 1).get(timeout=5)


@app.task
def unserializable_result():
    return {1, 2, 3}


@app.task
def record(path, token):
    """Append one line per execution: the tests count runs of each token."""
    with open(path, "a") as f:
        f.write(f"{token} {os.getpid()}\n")
    return token


@app.task
def record_slow(path, token, seconds=0.2):
    time.sleep(seconds)
    with open(path, "a") as f:
        f.write(f"{token} {os.getpid()}\n")
    return token


@app.task
def echo(value):
    return value


@app.task(bind=True, autoretry_for=(Exception,), max_retries=10, default_retry_delay=0)
def stops_itself(self):  # Celery's #6436: the limit retry() was given holds for autoretry
    if self.request.retries == 2:
        self.retry(exc=ValueError("stop"), max_retries=0, countdown=0)
    raise KeyError(f"try {self.request.retries}")


@app.task
def now():
    return time.time()


@app.task(acks_late=False)
def acked_early():
    """Acknowledged as it begins, whatever task_acks_late says."""
    return "early"


@app.task(acks_late=True, reject_on_worker_lost=True)
def die_once(marker):
    """Kills its child on the first delivery only."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return "second delivery"


@app.task(bind=True, default_retry_delay=0.05)
def retry_twice(self, first_delay=1.0):
    if self.request.retries < 2:
        raise self.retry(countdown=first_delay if self.request.retries == 0 else 0.05)
    return self.request.retries


@app.task(bind=True)
def retry_at(self, eta=None, countdown=None):
    raise self.retry(eta=eta, countdown=countdown)


@app.task(bind=True, max_retries=1)
def retry_forever(self, with_exc=False):
    raise self.retry(exc=KeyError("original") if with_exc else None, countdown=0.05)


@app.task(autoretry_for=(ValueError,), max_retries=2, default_retry_delay=0.05)
def autoretry(path):
    with open(path, "a") as f:
        f.write("run\n")
    raise ValueError("always")


@app.task
def hog(megabytes=60):
    _hoard.append(bytearray(megabytes * 1024 * 1024))
    return os.getpid()


# -- canvas, routing and eager tests (test_canvas, test_routing, test_eager) ------

@app.task
def tsum(values, extra=0):
    """A chord callback: the sum of the members' results."""
    return sum(values) + extra


@app.task(queue="q_opt")
def in_q_opt(value):
    return value


@app.task
def route_exact(value):  # routed only by test_routing's task_routes
    return value


@app.task
def heavy_one(value):  # matched by the glob "tests.tasks.heavy_*" in test_routing
    return value


@app.task
def heavy_two(value):
    return value


@app.task
def default_probe(value):  # sent only by test_routing, after it changes task_default_queue
    return value


# -- worker lifecycle tests (test_worker_lifecycle) ----------------------------------

@app.task
def wait_for_gate(gate, value=None, timeout=60.0):
    """Say it runs (file ``gate.running.<value>``), then wait until the test creates the
    file ``gate`` (at most timeout seconds), then return value (default: the pid)."""
    open(f"{gate}.running.{value}", "w").close()
    deadline = time.monotonic() + timeout
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
        time.sleep(0.01)
    return value if value is not None else os.getpid()


# -- reliability and timing tests (test_reliability, test_timing) ---------------------

@app.task(acks_late=True, reject_on_worker_lost=True)
def die_always():
    """Kills its child on every delivery: the delivery cap must stop the loop."""
    os._exit(1)


@app.task(bind=True, max_retries=5)
def retry_record(self, path, times, countdown=0.1):
    """Append 'retries time' per run; retry until it has retried ``times`` times."""
    with open(path, "a") as f:
        f.write(f"{self.request.retries} {time.time()}\n")
    if self.request.retries < times:
        raise self.retry(countdown=countdown)
    return self.request.retries


@app.task(autoretry_for=(ValueError,), max_retries=2, retry_backoff=1, retry_jitter=False)
def autoretry_backoff(path):
    """Fails every run; Celery's backoff without jitter waits 1 s, then 2 s."""
    with open(path, "a") as f:
        f.write(f"{time.time()}\n")
    raise ValueError("still failing")


# -- core behaviour tests (test_core) ---------------------------------------------------

@app.task
def span(seconds):
    """Sleep; return [pid, start, end] (unix times) so a test can see runs overlap."""
    start = time.time()
    time.sleep(seconds)
    return [os.getpid(), start, time.time()]


@app.task
def kill_self_with(signame):
    """The child sends itself a signal whose default action ends it (unlike SIGKILL,
    one it could in principle handle)."""
    os.kill(os.getpid(), getattr(signal, signame))
    time.sleep(5)  # not reached: the signal ends the process first
    return "survived"


# -- fault tests (test_faults) ---------------------------------------------------------

@app.task(bind=True)
def progress_forever(self):
    """Report progress until aborted: under a short soft limit, the limit lands inside
    miniq's own database calls (is_aborted, update_state)."""
    i = 0
    while True:
        if self.is_aborted():
            return "aborted"
        self.update_state(state="PROGRESS", meta={"i": i})
        i += 1


@app.task
def record_gated(path, token, gate, timeout=60.0):
    """Append 'token pid' per run, then wait until the file gate exists (at most timeout)."""
    with open(path, "a") as f:
        f.write(f"{token} {os.getpid()}\n")
    deadline = time.monotonic() + timeout
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
        time.sleep(0.01)
    return token


@app.task
def raise_undecodable_path(in_message=False):
    """A file name that is not UTF-8 (as os.listdir gives it) holds a lone surrogate: as
    the error's filename (str() shows its repr), or in the message text itself."""
    name = os.fsdecode(b"/data/r\xe9sum\xe9.txt")
    if in_message:
        raise FileNotFoundError(2, f"No such file: {name}")
    raise FileNotFoundError(2, "No such file", name)


@app.task(bind=True)
def undecodable_state(self):
    """Report a custom state that is not valid UTF-8 text (a lone surrogate)."""
    self.update_state(state="PROGRESS\udce9", meta={"i": 1})
    return "done"


@app.task(bind=True)
def record_attempt(self, path, seconds=30.0):
    """Append 'attempts pid' per run; sleep on the first delivery only, return attempts."""
    with open(path, "a") as f:
        f.write(f"{self.request.attempts} {os.getpid()}\n")
    if self.request.attempts == 1:
        time.sleep(seconds)
    return self.request.attempts


@app.task
def nested_result(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


@app.task
def nested_beyond_limit(depth, fail):
    """A value nested deeper than a default interpreter reads: this one raises its limit."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), depth * 4))
    value = nested_result(depth)
    if fail:
        raise ValueError(value)
    return value


@app.task
def huge_int(fail):
    """An int past the digit limit the manager reads JSON with: this one lifts its own."""
    sys.set_int_max_str_digits(0)
    if fail:
        raise ValueError(10 ** 5000)
    return 10 ** 5000


@app.task
def stop_signals_as_a_task_leaves_them(set_default):
    """Set Ctrl-C and SIGTERM to their defaults if told; whether both were ignored."""
    seen = [signal.getsignal(s) is signal.SIG_IGN for s in (signal.SIGINT, signal.SIGTERM)]
    for signum in (signal.SIGINT, signal.SIGTERM) if set_default else ():
        signal.signal(signum, signal.SIG_DFL)
    return all(seen)


@app.task
def write_to_manager(frame_hex, times=1, every=0.0):
    """Write raw bytes into this child's pipe to its manager, as a task can; ``times``
    over, ``every`` seconds apart (a log line a second, written to the wrong fd)."""
    import gc
    from multiprocessing.connection import Connection
    for time_ in range(times):
        time.sleep(every if time_ else 0)
        for conn in gc.get_objects():
            if isinstance(conn, Connection) and not conn.closed and conn.writable:
                os.write(conn.fileno(), bytes.fromhex(frame_hex))
    return "written"


@app.task
def writable_pipes():
    """How many pipes this child can write to: its replies' only, not its siblings' jobs."""
    import gc
    from multiprocessing.connection import Connection
    return sum(1 for conn in gc.get_objects()
               if isinstance(conn, Connection) and not conn.closed and conn.writable)


@app.task(bind=True)
def forges_its_reply(self, seconds):
    """Send the manager a reply of its own making, in the child's own format, then run on:
    its real reply comes after the manager has handed this child another task."""
    import gc
    from multiprocessing.connection import Connection

    from miniq.task import Outcome
    from miniq.worker import _put
    for conn in gc.get_objects():  # the pipe to the manager: the one writable pipe
        if isinstance(conn, Connection) and not conn.closed and conn.writable:
            _put(conn, (self.request.id, tuple(Outcome("SUCCESS", '"forged"')), False))
    time.sleep(seconds)
    return "real"


@app.task
def shrugs_off_usr1(ready, seconds=30.0):
    """Note SIGUSR1 in a file, and run on for seconds: a terminate with it does not end it."""
    signal.signal(signal.SIGUSR1, lambda signum, frame: open(f"{ready}.usr1", "w").close())
    open(ready, "w").close()
    time.sleep(seconds)
    return "ran to the end"


@app.task
def object_result():
    return object()


class UnprintableError(Exception):
    """An exception whose text cannot be had: str() raises."""

    def __str__(self):
        raise RuntimeError("no text for this exception")


class ArglessError(Exception):
    """An exception whose args cannot be read."""

    @property
    def args(self):
        raise RuntimeError("no args for this exception")


@app.task
def raise_argless():
    raise ArglessError("hidden")


class UnreadableError(Exception):
    """An exception none of whose attributes but its class can be read."""

    def __getattribute__(self, name):
        if name == "__class__":
            return object.__getattribute__(self, name)
        raise RuntimeError(f"no {name} for this exception")


@app.task
def returns_a_result_set():
    return ResultSet([app.AsyncResult("a")])


@app.task
def raise_unreadable():
    raise UnreadableError("hidden")


@app.task
def raise_unprintable(json_args=True):
    raise UnprintableError("json", 1) if json_args else UnprintableError(object())


@app.task
def bare_retry():
    from miniq.exceptions import Retry
    raise Retry()


@app.task(bind=True)
def state_less_meta(self):
    self.update_state(meta={"step": 1})
    return self.AsyncResult(self.request.id).state


logger = get_task_logger(__name__)


@app.task(bind=True)
def log_line(self, text):
    logger.warning("%s from %s", text, self.request.id)
    return states.SUCCESS


@app.task
def prints(text):
    print(text, "out")
    sys.stderr.write(f"{text} err\n")
    sys.stdout.write(f"{text} {sys.stdout.encoding} at last")  # no newline: logged as it ends
    return text


class Recorded(Task):
    """Notes each hook Celery calls in the file its task's first argument names."""

    def note(self, args, text):
        with open(args[0], "a") as f:
            f.write(text + "\n")

    def before_start(self, task_id, args, kwargs):
        self.note(args, f"before_start {task_id == self.request.id}")

    def on_success(self, retval, task_id, args, kwargs):
        self.note(args, f"on_success {retval}")

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        self.note(args, f"on_failure {exc!r} {einfo.type.__name__} {'Traceback' in str(einfo)}")
        if args[1] == "hang, hooks too":
            time.sleep(30)

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        self.note(args, f"on_retry {exc!r}")

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        self.note(args, f"after_return {status} {retval!r}")
        if args[1] == "broken hook":
            raise RuntimeError("a bug in after_return")


@app.task(base=Recorded, bind=True, default_retry_delay=0)
def hooked(self, path, mode):
    if mode == "fail":
        raise ValueError("no")
    if mode == "retry" and self.request.retries == 0:
        raise self.retry(exc=KeyError("again"))
    if mode.startswith("hang"):  # sent with a hard time limit
        time.sleep(30)
    return mode


class Wrapped(Task):
    """A base whose __call__ wraps every run, as Flask's app-context task does."""

    def __call__(self, *args, **kwargs):
        return ["wrapped", self.run(*args, **kwargs)]


@app.task(base=Wrapped)
def wrapped(x):
    return x


# -- rate limits (test_rate_limit) -----------------------------------------------------

@app.task(rate_limit="20/s")
def paced():
    """Its start time; at most 20 starts a second across all workers on the file."""
    return time.time()


# -- results: ignore_result, on_message, the types JSON carries (test_results) -----------------

@app.task(bind=True, ignore_result=True)
def ignored_progress(self):
    self.update_state(state="PROGRESS", meta={"done": 1})
    return "not kept"


@app.task(ignore_result=True)
def ignored_record(path, token):
    """Keeps no result, so it notes each run in the file path (as record does)."""
    record(path, token)
    return token


@app.task(bind=True)
def describe(self, *args, **kwargs):
    """What this child received, as values and type names, and the meta it reported as it
    reads it back from the database."""
    self.update_state(state="PROGRESS", meta={"args": list(args), "kwargs": kwargs})
    meta = self.AsyncResult(self.request.id).info
    types = [type(value).__name__ for value in (*args, *kwargs.values())]
    return {"args": list(args), "kwargs": kwargs, "meta": meta, "types": types}


@app.task(bind=True)
def progress_gated(self, gate, meta, timeout=60.0):
    """Report PROGRESS with meta, then finish once the test creates the file gate."""
    self.update_state(state="PROGRESS", meta=meta)
    deadline = time.monotonic() + timeout
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
        time.sleep(0.01)
    return "done"


# Workflows: errbacks, replace, and a signature sent as data (test_canvas)
@app.task
def errback_new(request, exc, traceback, path):
    """A new-style errback: Celery gives it the failed task's request, exception and
    traceback; it writes what it got, one JSON line a call."""
    seen = [request.id, request.task, type(exc).__name__, str(exc), "Traceback" in (traceback or "")]
    with open(path, "a") as f:
        f.write(json.dumps(seen) + "\n")


@app.task
def errback_old(task_id, **kwargs):
    """An old-style errback: one argument, the failed task's id."""
    with open(kwargs["path"], "a") as f:
        f.write(json.dumps([task_id]) + "\n")


@app.task(bind=True)
def replaced_by(self, sig, *args):
    """Ends by replacing itself with sig (it arrives as a dict); extra args are ignored."""
    from miniq import signature
    return self.replace(signature(sig))


@app.task(bind=True)
def replaced_keeping_its_id(self, x, y):
    """Replaced by add(x, y) given this task's own id, as Celery's replace() gives it."""
    return self.replace(add.s(x, y).set(task_id=self.request.id))


@app.task
def send_signature(sig, *args):
    """Rebuild a signature that arrived as data and send it; its result's id."""
    from miniq.canvas import maybe_signature
    return maybe_signature(sig, app).apply_async(args).id


@app.task
def family(depth):
    """Sends add(depth, depth), then a group of add(1, 1) and family(depth - 1), while
    depth > 0; returns depth."""
    from miniq import group
    if depth:
        add.delay(depth, depth)
        group(add.s(1, 1), family.s(depth - 1)).delay()
    return depth


@app.task
def join_allowed(x):
    """get() inside allow_join_result waits for add(x, x); after the block it is refused again."""
    from miniq.result import allow_join_result
    with allow_join_result():
        value = add.delay(x, x).get(timeout=20)
    try:
        add.delay(0, 0).get(timeout=20)
    except RuntimeError:
        return value, "refused again"
    return value, "not refused"


@app.task
def wait_file(path, timeout=30.0):
    """Run until the file at path exists (a gate a test opens), at most timeout seconds."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.path.exists(path)


class ReprBomb(Exception):
    """An exception whose repr recurses without end, and whose class the manager must not run."""

    def __repr__(self):
        return repr(self)


@app.task
def raise_repr_bomb():
    raise ReprBomb("bomb")


class ExitOnInit(Exception):
    """An exception whose constructor ends the process that builds it."""

    def __init__(self, *args):
        raise SystemExit(f"ExitOnInit{args} was built")


@app.task
def raise_exit_on_init():
    error = ExitOnInit.__new__(ExitOnInit)  # raised, never built: only a reader builds it
    error.args = ("bomb",)
    raise error


@app.task(bind=True)
def retry_nan(self):
    raise self.retry(countdown=float("nan"))


@app.task
def fork_and_return():
    """Return in this child and in a process forked from it: only this child may answer."""
    return "forked" if os.fork() == 0 else "parent"


@app.task(base=Recorded)
def fork_with_hooks(path, mode):
    """fork_and_return, with hooks: its outcome is written before they run."""
    return "forked" if os.fork() == 0 else "parent"


@app.task
def leave_alarm(block=False):
    """Leave SIGALRM behind for the next task: an armed timer, or the signal blocked."""
    if block:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    else:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
    return "left"


@app.task(autoretry_for=(ValueError,), max_retries=1, retry_backoff=0.5, retry_jitter=False)
def autoretry_backoff_half(path):
    """As Celery's, a backoff factor under 1 counts as 1: the retry waits 1 s."""
    with open(path, "a") as f:
        f.write(f"{time.time()}\n")
    raise ValueError("still failing")


@app.task(bind=True, max_retries=1)
def retry_unthrown(self, path, then_raise=False):
    """retry(throw=False), then return (or raise): the run is retried all the same, as
    Celery's."""
    with open(path, "a") as f:
        f.write(f"{self.request.retries}\n")
    if not self.request.retries:
        self.retry(countdown=0.05, throw=False)
        if then_raise:
            raise ValueError("after retry(throw=False)")
    return f"run {self.request.retries}"


@app.task(bind=True)
def retry_elsewhere(self, queue, priority=None, **options):
    """Retried once with these options; then where that run was delivered."""
    if self.request.retries == 0:
        raise self.retry(queue=queue, priority=priority, countdown=0, **options)
    return self.request.delivery_info["routing_key"], self.request.delivery_info["priority"]


@app.task
def send_child(value):
    """Send add(value, value) from inside a task; its id."""
    return add.delay(value, value).id


@app.task(priority=7)
def add_at_7(x, y):
    return x + y


@app.task
def send_child_at_7(value):
    """Send a task whose own priority is 7 from inside a task; its id."""
    return add_at_7.delay(value, value).id


@app.task(bind=True)
def request_fields(self):
    return {"retries": self.request.retries, "headers": self.request.headers}


@app.task(bind=True)
def stop_here(self, value, what="chain"):
    """End the workflow after this step, as Celery lets a task: clear its request's own."""
    setattr(self.request, what, None)
    return value


@app.task(bind=True)
def chain_seen(self):
    """The task names of the chain after this step, as this request holds them."""
    return [step["task"] for step in self.request.chain]


class UnreadableOptions(Task):
    """Options that raise as they are read: the worker reads them as it claims, runs
    and settles a task, and must not stop for them."""

    @property
    def acks_late(self):
        raise ZeroDivisionError("an option that cannot be read")

    ignore_result = acks_late


@app.task(base=UnreadableOptions)
def unreadable_options():
    return "ran"
