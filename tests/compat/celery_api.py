"""Tasks written only in Celery's API: the same module runs on miniq and on Celery.

MINIQ_COMPAT_IMPL names the implementation ("miniq", the default, or
"celery"); for a user, moving to Celery is changing the import lines, which
read ``from <impl> import Celery, chain, chord, group, signature`` and
``from <impl>.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded``,
and giving Celery a broker. Here that is Redis, broker and result backend at
the URL in COMPAT_REDIS_URL; miniq takes its SQLite file from MINIQ_BROKER_URL.
"""
import functools
import importlib
import os
import signal
import socket
import threading
import time
from datetime import datetime, timedelta, timezone

impl = importlib.import_module(os.environ.get("MINIQ_COMPAT_IMPL", "miniq"))
_exceptions = importlib.import_module(impl.__name__ + ".exceptions")
signals = importlib.import_module(impl.__name__ + ".signals")
Celery, chain, group, chord = impl.Celery, impl.chain, impl.group, impl.chord
signature = impl.signature
SoftTimeLimitExceeded = _exceptions.SoftTimeLimitExceeded
TimeLimitExceeded = _exceptions.TimeLimitExceeded
MaxRetriesExceededError = _exceptions.MaxRetriesExceededError
Ignore, Reject = _exceptions.Ignore, _exceptions.Reject
TimeoutError = _exceptions.TimeoutError

app = Celery("compat")  # miniq: the broker comes from MINIQ_BROKER_URL
if impl.__name__ == "celery":
    redis_url = os.environ["COMPAT_REDIS_URL"]
    app.conf.update(broker_url=redis_url, result_backend=redis_url,
                    broker_connection_retry_on_startup=True,
                    # a result collected after the server is gone: give up at once
                    result_backend_transport_options={"retry_policy": {"max_retries": 1}})

app.conf.task_annotations = {__name__ + ".annotated": {"rate_limit": "10/s"}}


@app.task
def add(x, y):
    return x + y


@app.task(bind=True)
def whoami(self):
    return self.request.id


@app.task(bind=True)
def has_eta(self, *args):
    return self.request.eta is not None


@app.task(bind=True)
def chord_fields(self, *args):
    return [self.request.chord, self.request.group_index]


@app.task(bind=True)
def its_priority(self, *args):
    return (self.request.delivery_info or {}).get("priority")


@app.task(bind=True)
def sees_itself(self):
    """What current_task (Celery's proxy) and app.current_task say inside a task."""
    running = impl.current_task
    return [bool(running), running.request.id == self.request.id, running.name == self.name,
            app.current_task.name == self.name]


@app.task(bind=True)
def replaced_by_an_empty_chain(self):
    return self.replace(chain())


@app.task(bind=True)
def replaced_by_nothing(self):
    return self.replace(impl.group([]))


@app.task(bind=True)
def replaced_by_a_failing_group(self):
    return self.replace(group(add.si(1, 1), fail.si()))


@app.task(bind=True)
def replaced_by_whoami(self):
    return self.replace(whoami.si())


@app.task(bind=True, max_retries=1)
def retried_with_new_args(self, x, y=0):
    if not self.request.retries:
        raise self.retry(countdown=0.1, args=(x + 10,))
    return [x, y, list(self.request.args), self.request.kwargs]


@app.task(bind=True, max_retries=1)
def retried_with_new_kwargs(self, x, y=0):
    if not self.request.retries:
        raise self.retry(countdown=0.1, kwargs={"y": 5})
    return [x, y, list(self.request.args), self.request.kwargs]


def _with_a_session(fun):
    """A decorator that supplies the first argument: the task's callers do not."""
    @functools.wraps(fun)
    def supplied(*args, **kwargs):
        return fun("session", *args, **kwargs)
    return supplied


@app.task
@_with_a_session
def uses_a_session(session, x):
    return [session, x]


@app.task(ignore_result=True, track_started=True)
def waits_unrecorded(ready, gate):
    """Says it runs in the file ready, then waits for the file gate (20 s at most)."""
    with open(ready, "w") as f:
        f.write("running\n")
    deadline = time.monotonic() + 20
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)


@app.task(bind=True)
def replaced_once_open(self, ready, gate):
    """Replaced by add(1, 1) once the caller creates the file gate (20 s at most)."""
    open(ready, "w").close()
    deadline = time.monotonic() + 20
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    return self.replace(add.si(1, 1))


class NotesReplacement(impl.Task):
    def on_replace(self, sig):
        """Celery's hook, overridden as its docs say: the replacement gets an argument."""
        return super().on_replace(sig.clone((100,)))


@app.task(bind=True, base=NotesReplacement)
def replaced_through_its_hook(self):
    return self.replace(add.s(1))


@app.task
def returns_what_it_sent(as_group=False):
    """The result of what it sent, as its own: stored as its ids, as Celery stores it."""
    return group(add.s(2, 2), add.s(3, 3)).delay() if as_group else add.delay(1, 1)


@app.task(trail=False)
def sends_untrailed():
    return add.delay(1, 1).id


@app.task
def sends_two_one_added():
    return [add.delay(1, 1).id, add.apply_async((2, 2), add_to_parent=False).id]


@app.task(bind=True)
def sends_a_replaced_task(self):
    return replaced_by_whoami.delay().id


@app.task
def current_name():
    return impl.current_task.name


@app.task
def calls_current_name():
    return current_name()  # a plain call: the current task is the one called


@app.task(bind=True)
def flaky(self):
    if self.request.retries < 2:
        raise self.retry(countdown=0.1, max_retries=2)
    return self.request.retries


@app.task(bind=True)
def plain_retry(self):
    if not self.request.retries:
        raise self.retry(countdown=1)  # no exc: none is stored, as Celery's
    return "again"


@app.task(bind=True)
def always_retry(self):
    raise self.retry(countdown=0.1, max_retries=2)


@app.task(bind=True)
def catches_its_last_retry(self, *args, **kwargs):
    try:
        raise self.retry(countdown=0.1, max_retries=1)
    except self.MaxRetriesExceededError as exc:  # Celery's task attribute
        return f"gave up after {self.request.retries}: {str(exc).partition(' args:')[2]}"


@app.task(soft_time_limit=0.5, time_limit=10)
def polite():
    try:
        time.sleep(5)
    except SoftTimeLimitExceeded as exc:
        return "cleaned up" if exc.args == () else f"cleaned up, but given {exc.args}"
    return "slept"


@app.task(time_limit=1)
def stubborn():
    time.sleep(5)
    return "never"


@app.task(soft_time_limit=10, time_limit=1)
def contradictory():
    return "never sent"


@app.task
def fail():
    raise ValueError("as expected")


Task = impl.Task


class CompatError(Exception):
    """A project's own exception class: ``except CompatError`` around get() must match."""


class RetriedByItsHook(Task):
    """As a project's base (adsputils'): a failure retried once, from on_failure."""

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        if self.request.retries < 1:
            self.retry(countdown=0.1, exc=exc)


@app.task(bind=True, base=RetriedByItsHook)
def fails_each_run(self):
    raise ValueError(f"run {self.request.retries}")


@app.task
def found_in_state():
    """What a log formatter copied from Celery's reads: celery._state's current task."""
    state = importlib.import_module(impl.__name__ + "._state")
    return (state.get_current_task().name, state.get_current_worker_task().name,
            state.get_current_app() is app)


@app.task
def calls_found_in_state():
    return found_in_state()  # a plain call: the worker's task is still this one


@app.task
def raise_own():
    raise CompatError("own class")


class SeveralArgs(Exception):
    def __init__(self, a, b, c):
        super().__init__(a, b, c)


class BaseFault(BaseException):
    """Not an Exception: still the task's failure, not its process's end."""


@app.task
def raise_several(base):
    if base:
        raise BaseFault("base")
    raise SeveralArgs(1, "two", {3})  # an arg JSON cannot carry: its repr


class NeedsTwo(Exception):
    """Its constructor takes another argument than its args: not made again from them."""

    def __init__(self, text, code):
        super().__init__(text)
        self.code = code


class Fault(Exception):
    """A project's base exception, which its args make again."""


class NeedsTwoFault(Fault):
    def __init__(self, text, code):
        super().__init__(text)


@app.task(bind=True)
def raise_needing_two(self, based):
    if not self.request.retries:
        self.retry(countdown=0.1, max_retries=1, expires=None)  # None: no option given
    raise (NeedsTwoFault if based else NeedsTwo)("foo", 2)


@app.task
def raise_unpickleable(kind):
    """An exception that does not pickle: a class made in the call, or an arg that is a lock."""
    class Local(KeyError):
        pass
    raise Local("local") if kind == "local" else ValueError(threading.Lock())


class Noted(Task):
    """Notes the hooks Celery calls in the file the task's first argument names."""

    def note(self, args, text):
        with open(args[0], "a") as f:
            f.write(text + "\n")

    def before_start(self, task_id, args, kwargs):
        self.note(args, "before_start")

    def on_success(self, retval, task_id, args, kwargs):
        self.note(args, f"on_success {retval}")

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        whole = len(einfo.exc_info) == 3 and einfo.tb is not None  # Celery's fields
        self.note(args, f"on_failure {einfo.type.__name__} {exc} {whole}")

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        self.note(args, f"on_retry {exc!r}")

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        self.note(args, f"after_return {status}")


@app.task(base=Noted, bind=True)
def noted(self, path, fail):
    if fail == "retry" and not self.request.retries:
        # not at once: Celery sends the retry before on_retry runs, and its other pool
        # process would start the next run (and note before_start) meanwhile
        raise self.retry(exc=KeyError("again"), countdown=0.5)
    if fail is True:
        raise CompatError("as planned")
    if fail == "hang":  # sent with a hard time limit
        time.sleep(10)
    return "fine"


class Peeking(Task):
    """Notes what its own result shows as each hook runs."""

    def on_success(self, retval, task_id, args, kwargs):
        self.peek(args, "on_success", task_id)

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        self.peek(args, "on_failure", task_id)

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        self.peek(args, "after_return", task_id)

    def peek(self, args, hook, task_id):
        result = self.AsyncResult(task_id)
        with open(args[0], "a") as f:
            f.write(f"{hook} {result.state} {result.result!r}\n")


@app.task(base=Peeking)
def peeked(path, fail):
    if fail == "hang":  # sent with a hard time limit
        time.sleep(10)
    if fail:
        raise CompatError("peeked")
    return {"v": 1}


class Opened(Task):
    """A base with its own ``__init__(self)``: Celery makes each task with no arguments."""

    def __init__(self):
        self.opened = f"opened once for {self.name} by {self.opener}"


@app.task(base=Opened, bind=True, opener="its own option")  # any option: an attribute
def opened(self):
    return [self.opened, type(self).__name__]


@app.task(bind=True, expires=60)
def own_expiry(self):
    """Whether it runs with an expiry: its own, unless the call gives one (None too)."""
    return self.request.expires is not None


@app.task(bind=True)
def retried_at_once(self):
    """The eta its retry's run sees: none, for a retry due now."""
    if not self.request.retries:
        raise self.retry(countdown=0, max_retries=1)
    return self.request.eta


@app.task(bind=True)
def nested(self, depth):
    """How many replacements ran before this run."""
    if depth:
        raise self.replace(nested.s(depth - 1))
    return self.request.replaced_task_nesting


abortable = importlib.import_module(impl.__name__ + ".contrib.abortable")


@app.task(bind=True, base=abortable.AbortableTask)
def until_aborted(self, path):
    """Says it runs (a file at path), then runs until asked to stop."""
    open(path, "w").close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if self.is_aborted():
            return "aborted"
        time.sleep(0.05)
    return "never aborted"


class Shadowed(Task):
    def shadow_name(self, args, kwargs, options):
        """The name worker logs and monitoring give each call."""
        return f"{self.name}:{args[0]}"


@app.task(bind=True, base=Shadowed)
def shadowed(self, what):
    return self.request.shadow


class InContext(Task):
    """Flask's recipe: a base whose __call__ wraps the run and calls Task's own."""

    def __call__(self, *args, **kwargs):
        return super().__call__(*args, **kwargs)


@app.task(base=InContext, bind=True)
def in_context(self, x):
    """Its request survives the base's __call__: a retry and update_state work there."""
    if not self.request.retries:
        raise self.retry(countdown=0.1, max_retries=1)
    self.update_state(state="PROGRESS", meta={"x": x})
    return [x, self.request.id is not None, self.request.retries]


class RunsItsOwn(Task):
    """A base with a run of its own, and a hook Celery calls as each task is made."""

    def run(self, *args, **kwargs):
        return "the base's run"

    @classmethod
    def on_bound(cls, app):
        cls.bound_to = app.main


@app.task(base=RunsItsOwn)
def own_run():
    """The function runs, not the base's run."""
    return ["the function", own_run.bound_to]


@app.task(bind=True)
def stored_by_hand(self):
    self.update_state(state="SUCCESS", meta={"by": "hand"})
    raise Ignore()


@app.task
def reject():
    raise Reject("no thanks", requeue=False)


@app.task(bind=True, autoretry_for=(Exception,), dont_autoretry_for=(KeyError,), max_retries=2,
          default_retry_delay=0)
def picky(self):
    raise KeyError(f"try {self.request.retries}")


@app.task(rate_limit="10/s")
def paced():
    return time.time()


@app.task
def annotated():  # rate-limited by task_annotations
    return time.time()


@app.task(bind=True)
def request_view(self):
    """The fields of self.request a task may read, as JSON carries them."""
    r = self.request
    return {"id": r.id, "hostname": r.hostname, "delivery_info": r.delivery_info,
            "root_id": r.root_id, "parent_id": r.parent_id, "group": r.group, "eta": r.eta,
            "expires": r.expires, "timelimit": r.timelimit, "headers": r.headers,
            "x_note": getattr(r, "x_note", None), "correlation_id": r.correlation_id == r.id,
            "ignore_result": r.ignore_result, "utc": r.utc,
            "properties": {key: r.properties.get(key) for key in ("correlation_id", "priority")}}


@app.task(bind=True)
def call_shown(self, *args, **kwargs):
    """How a worker's run shows its own call: the fields Celery's message headers give."""
    r = self.request
    return [r.argsrepr, r.kwargsrepr, r.lang, r.taskset]


@app.task(bind=True)
def chain_view(self, *args):
    """The task names of the chain after this step, last first, as the request holds them."""
    chain = self.request.chain
    return None if chain is None else [step["task"].rpartition(".")[2] for step in chain]


@app.task
def spawner():
    """Sends request_view from inside a task; returns its id."""
    return request_view.delay().id


@app.task(bind=True)
def trail_keeper(self):
    """What self.request.children holds after it sends two tasks, one not its child."""
    sent = add.delay(1, 1)
    add.apply_async((2, 2), add_to_parent=False)
    add.s(3, 3).delay()
    return [type(r).__name__ for r in self.request.children], self.request.children[0].id == sent.id


def _note(kwargs, text):
    """Appends text to the file a signalled task's signal_log argument names."""
    path = (kwargs or {}).get("signal_log")
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")


@signals.task_prerun.connect
def _on_prerun(sender=None, task_id=None, task=None, args=None, kwargs=None, **named):
    _note(kwargs, f"prerun {task is sender} {task_id == task.request.id} {list(args)}")


@signals.task_success.connect
def _on_success(sender=None, result=None, **named):
    _note(sender.request.kwargs, f"success {result}")


@signals.task_failure.connect
def _on_failure(sender=None, task_id=None, exception=None, args=None, kwargs=None, **named):
    _note(kwargs, f"failure {type(exception).__name__} {exception} {task_id == sender.request.id}")


@signals.task_postrun.connect
def _on_postrun(sender=None, task=None, retval=None, state=None, kwargs=None, **named):
    _note(kwargs, f"postrun {state} {retval!r}")


@signals.task_revoked.connect
def _on_revoked(sender=None, request=None, terminated=None, signum=None, expired=None, **named):
    _note(request.kwargs, f"revoked {terminated} {signum == signal.SIGUSR1} {expired}")


@app.task
def until_usr1(ready=None, fail=False, signal_log=None):
    """Runs until SIGUSR1 (30 s at most), then cleans up for 1.5 s, then returns or fails
    (later than Celery's REVOKED, which its outcome then replaces)."""
    got = []
    signal.signal(signal.SIGUSR1, lambda signum, frame: got.append(signum))
    open(ready, "w").close()
    deadline = time.monotonic() + 30
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(1.5)
    if fail:
        raise CompatError("got the signal")
    return "cleaned" if got else "never signalled"


@app.task
def until_soft_limit(ready=None, signal_log=None):
    """Runs until SoftTimeLimitExceeded is raised in it (30 s at most): a SIGUSR1 raises
    it, as Celery's children take that signal. Then cleans up for 1.5 s and returns."""
    open(ready, "w").close()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.02)
        return "never signalled"
    except SoftTimeLimitExceeded as exc:
        time.sleep(1.5)
        return f"cleaned up after {exc!r}"


@app.task
def signalled(x, fail=False, signal_log=None):
    if fail:
        raise CompatError("as planned")
    return 2 * x


@app.task
def echo(value):
    return value


@app.task(bind=True)
def link_shapes(self):
    """What self.request keeps of a call's link and link_error."""
    return [type(self.request.callbacks).__name__, type(self.request.errbacks).__name__]


@app.task(bind=True)
def lineage(self, *args):
    r = self.request
    return {"id": r.id, "parent_id": r.parent_id, "root_id": r.root_id, "group": r.group}


@app.task(bind=True)
def delivery_seen(self):
    return self.request.delivery_info


@app.task(bind=True)
def retry_in_2s(self):
    """Retries once, in 2 s: a countdown beats an eta. The retry's run reads its own
    result: the exception the first run retried for, or nothing, not its stored form."""
    if not self.request.retries:
        an_hour = datetime.now(timezone.utc) + timedelta(hours=1)
        raise self.retry(exc=KeyError("first"), countdown=2, eta=an_hour)
    info = self.AsyncResult(self.request.id).info
    return ["again", not (isinstance(info, dict) and "exc_type" in info)]


# Canvas (issue 12): the tasks of Celery's canvas guide. maybe_signature and
# Signature are read from the implementation where they are used (``celery.X``).

@app.task
def mul(x, y):
    return x * y


@app.task
def tsum(numbers):
    return sum(numbers)


@app.task(bind=True)
def add_replaced(self, x, y):
    raise self.replace(add.s(x, y))


@app.task(bind=True)
def add_to_all(self, nums, val):
    raise self.replace(group(add.s(num, val) for num in nums))


@app.task(bind=True)
def mark_other(self, other_id):
    self.update_state(task_id=other_id, state="PROGRESS", meta={"from": self.request.id})


@app.task(bind=True)
def fails_by_hand(self):
    """The pattern of Celery's guides: store the failure, then end the run with no state."""
    self.update_state(state="FAILURE", meta=KeyError("by hand"))
    raise Ignore()


@app.task(bind=True)
def fail_replaced(self):
    raise self.replace(fail.si())


@app.task(bind=True)
def fail_replaced_by_group(self, chained=False):
    failing = group(add.si(1, 1), fail.si())
    raise self.replace(add.si(0, 0) | failing if chained else failing)


@app.task(bind=True)
def replace_with_chain(self, x):
    return self.replace(add.s(x, 1) | mul.s(10))


@app.task(bind=True)
def retries_seen(self):
    return self.request.retries, self.request.parent_id


@app.task
def jot(value, log):
    """A link callback: appends the value it is given to the file log names."""
    with open(log, "a") as f:
        f.write(f"{value!r}\n")
    return value


@app.task
def log_error(request, exc, traceback, *, log):
    """A new-style errback (three arguments): what it is given, one line in log."""
    with open(log, "a") as f:
        f.write(f"new {request.id} {type(exc).__name__} {exc} {type(traceback).__name__}\n")


@app.task
def log_failed_id(task_id, *, log):
    """An old-style errback (one argument): the failed task's id, one line in log."""
    with open(log, "a") as f:
        f.write(f"old {task_id}\n")


@app.task
def log_failed_id_with(task_id, extra, *, log):
    """An old-style errback given a partial argument: the failed task's id comes first."""
    with open(log, "a") as f:
        f.write(f"old {task_id} {extra}\n")


@app.task
def log_request(request, exc, traceback, *, log):
    """A new-style errback: what the failed task's request tells, one line in log."""
    fields = (request.hostname == f"celery@{socket.gethostname()}",
              request.delivery_info["routing_key"], request.correlation_id == request.id,
              request.chord, len(request.errbacks), request.chain)
    with open(log, "a") as f:
        f.write(f"{fields}\n")


@app.task
def send_signature(sig):
    """Rebuilds a signature that came as an argument (a dict after JSON) and sends it."""
    return impl.maybe_signature(sig, app=app).delay().id


@app.task
def describe_signature(sig):
    rebuilt = impl.Signature.from_dict(sig, app=app)
    return [type(sig).__name__, rebuilt.task, rebuilt.args, rebuilt.kwargs, rebuilt.immutable]


@app.task(ignore_result=True)
def fire_and_forget(value):
    return value


@app.task(ignore_result=True)
def fail_quietly():
    raise ValueError("nobody keeps this")


@app.task(bind=True, ignore_result=True)
def calls_back_later(self, callback_id):
    """Adds a callback as it runs: it gets the value, which the task itself keeps not."""
    self.request.callbacks = [add.s(100).set(task_id=callback_id)]
    return 1


@app.task
def echo_all(*args, **kwargs):
    return [list(args), kwargs]


@app.task
def sends_a_chord(body="task"):
    """Sends a chord whose callback is one task, a chain, a group, or a task with a
    group id of its own."""
    bodies = {"task": tsum.s, "chain": lambda: chain(tsum.s(), add.s(1)),
              "group": lambda: group(tsum.s(), tsum.s()),
              "own group": lambda: tsum.s().set(group_id=f"own-{os.getpid()}-{time.time()}")}
    chord([add.s(1, 1), add.s(2, 2)], bodies[body]()).delay()


@app.task(bind=True)
def progress_gated(self, gate):
    """Report PROGRESS, then finish once the caller creates the file gate (20 s at most)."""
    self.update_state(state="PROGRESS", meta={"step": 1})
    deadline = time.monotonic() + 20
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "done"


# Results (issue 12)
_result = importlib.import_module(impl.__name__ + ".result")
GroupResult, allow_join_result = _result.GroupResult, _result.allow_join_result
app.conf.result_extended = True  # Celery keeps name, args, queue, worker... only when told


@app.task
def family(depth):
    """Sends add(depth, depth), then a group of add(1, 1) and family(depth - 1), while
    depth > 0; returns depth."""
    if depth:
        add.delay(depth, depth)
        group(add.s(1, 1), family.s(depth - 1)).delay()
    return depth


@app.task
def join_inside(x):
    with allow_join_result():
        return add.delay(x, x).get(timeout=20)
