"""The road to Celery: tests/compat/celery_api.py, written only in Celery's
API, gives the same results on miniq and, with celery[redis] and redis-server
installed, on Celery itself with Redis as broker and result backend.

Each scenario is one function of the module (imported for the chosen
implementation) run against a real worker of that implementation; Celery's
side starts its own redis-server. When Celery's machinery fails (its worker
does not come up, dies, or gives no result in time) the worker is restarted
once and the scenario run again; if that fails too, the scenario is skipped
as a Celery infrastructure problem. A wrong result fails on either side.
"""
import contextlib
import gc
import importlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from decimal import Decimal

import pytest

import miniq.app
from tests.conftest import ROOT, wait_for

MODULE = "tests.compat.celery_api"
# Seconds for any one result, a worker's first one included. A Celery fault
# costs at most three (a wait, a restart, a second wait), and the first test
# also boots Redis (up to 20 s) and the worker (two): 20 + 5 * 25 s, within
# the suite's 180 s timeout for a test.
T = 25
WORKERS = {
    "miniq": ["-m", "miniq", "-A", MODULE, "worker", "-c", "2", "--loglevel", "info"],
    "celery": ["-m", "celery", "-A", MODULE, "worker", "--pool", "prefork", "-c", "2",
               "--loglevel", "warning", "--without-gossip", "--without-mingle",
               "--without-heartbeat"],
}


class NoAnswer(Exception):
    """The worker died or gave no result in time: a fault of its machinery, not an answer."""


FAULTS = [NoAnswer]  # what says the machinery failed; anything else is an answer
with contextlib.suppress(ImportError):
    import kombu.exceptions
    import redis.exceptions
    FAULTS += [kombu.exceptions.OperationalError, redis.exceptions.ConnectionError,
               redis.exceptions.TimeoutError]
FAULTS = tuple(FAULTS)


def import_for(impl, env):
    """The compat module, imported afresh with the environment of this implementation."""
    saved_env = {key: os.environ.get(key) for key in env}
    saved_default = miniq.app._default  # importing makes a Miniq app, the default one
    os.environ.update(env)
    sys.modules.pop(MODULE, None)
    try:
        return importlib.import_module(MODULE)
    finally:
        miniq.app._default = saved_default  # tests elsewhere rely on tests.tasks' app
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def kill(proc):
    """SIGKILL a process started in its own session, with any children, and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def free_port():
    """A localhost port that nothing listened on a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis(server, folder, attempt):
    """(process, port) of a redis-server on localhost without persistence, or None."""
    port = free_port()
    log_path = folder / f"redis-{attempt}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(folder)],
            cwd=folder, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    ready = False
    try:
        # Ready by its own log, not by a ping: the port may be another server's.
        with contextlib.suppress(AssertionError):  # not ready in 10 s: None
            wait_for(lambda: "Ready to accept connections" in log_path.read_text()
                     or proc.poll() is not None, 10, message="redis-server ready")
        ready = proc.poll() is None  # if it exited, most likely the port was taken first
        return (proc, port) if ready else None
    finally:
        if not ready:
            kill(proc)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """redis://127.0.0.1:PORT/0 of a redis-server of this module's own, killed at teardown."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("Celery's side needs redis-server on PATH (apt-get install redis-server)")
    folder = tmp_path_factory.mktemp("redis")
    started = start_redis(server, folder, 0) or start_redis(server, folder, 1)
    if started is None:
        log = (folder / "redis-1.log").read_text()[-1500:]
        pytest.skip(f"Celery infrastructure problem: redis-server did not start:\n{log}")
    proc, port = started
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        kill(proc)


class Side:
    """One implementation: its compat module, a worker of it, and bounded waits on both."""

    def __init__(self, impl, module, env, folder):
        self.impl, self.module, self.folder = impl, module, folder
        self.env = dict(os.environ, **env)
        self.env["PYTHONPATH"] = ROOT + os.pathsep + self.env.get("PYTHONPATH", "")
        self.worker = self.log_path = None
        self.starts = 0
        self.broken = None  # why Celery's side was given up, once it is

    def log(self):
        return self.log_path.read_text()[-1500:] if self.log_path else ""

    def start(self):
        """Start a worker; it is ready when it has run something."""
        self.log_path = self.folder / f"worker-{self.starts}.log"
        self.starts += 1
        with open(self.log_path, "w") as log:
            self.worker = subprocess.Popen(
                [sys.executable, *WORKERS[self.impl]], cwd=ROOT, env=self.env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        assert self.get(self.module.add.delay(0, 0)) == 0

    def stop(self):
        if self.worker is not None:
            kill(self.worker)
            self.worker = None

    def get(self, result):
        """result.get(), once it is ready; NoAnswer if the worker exits or T seconds pass first."""
        deadline = time.monotonic() + T
        while not result.ready():
            if self.worker.poll() is not None:
                raise NoAnswer(f"the {self.impl} worker exited ({self.worker.returncode})")
            if time.monotonic() > deadline:
                raise NoAnswer(f"the {self.impl} worker gave no result in {T} s")
            time.sleep(0.05)
        return result.get(timeout=T)

    def boot(self):
        """Start the worker; Celery's gets a second try."""
        try:
            self.start()
        except FAULTS as exc:
            if self.impl != "celery":
                pytest.fail(f"{exc}:\n{self.log()}")
            self.restart(f"its worker did not come up: {exc}")

    def run(self, scenario):
        """The scenario's answer; Celery's side gets one restart when its machinery fails."""
        if self.broken:
            pytest.skip(self.broken)
        try:
            return scenario(self.module, self.get)
        except FAULTS as exc:
            if self.impl != "celery":
                pytest.fail(f"{exc}:\n{self.log()}")
            first = exc
        self.restart(first)
        try:
            return scenario(self.module, self.get)
        except FAULTS as exc:
            self.give_up(f"{first}; after a restart, {exc}")

    def restart(self, why):
        self.stop()
        try:
            self.start()
        except FAULTS as exc:
            self.give_up(f"{why}; restarted, {exc}")

    def give_up(self, why):
        self.stop()
        self.broken = f"Celery infrastructure problem, not a miniq failure: {why}"
        pytest.skip(f"{self.broken}\n{self.log()}")


@pytest.fixture(scope="module", params=["miniq", "celery"])
def api(request, tmp_path_factory):
    """The Side of one implementation, its worker running."""
    impl = request.param
    folder = tmp_path_factory.mktemp(f"compat-{impl}")
    env = {"MINIQ_COMPAT_IMPL": impl, "MINIQ_BROKER_URL": f"sqlite:///{folder / 'compat.db'}"}
    if impl == "celery":
        pytest.importorskip("celery", reason="Celery's side needs celery[redis]")
        pytest.importorskip("redis", reason="Celery's side needs celery[redis]")
        env["COMPAT_REDIS_URL"] = request.getfixturevalue("redis_url")
    module = import_for(impl, env)
    assert module.impl.__name__ == impl
    side = Side(impl, module, env, folder)
    try:
        side.boot()
        yield side
    finally:
        side.stop()
        gc.collect()  # Celery's results in cycles say goodbye to Redis now, while it is up
        sys.modules.pop(MODULE, None)


def raised(call):
    """The call's value, or the name of the exception type it raised."""
    try:
        return call()
    except FAULTS:
        raise  # no answer at all: not a type to compare
    except Exception as exc:  # noqa: BLE001 - the type is what we compare
        return f"raised {type(exc).__name__}"


def delay_and_get(c, get):
    return get(c.add.delay(2, 3))


def bind_sees_its_request_id(c, get):
    result = c.whoami.delay()
    return get(result) == result.id


def retry_runs_again(c, get):
    return get(c.flaky.delay())


def a_retry_without_exc_stores_no_exception(c, get):
    result = c.plain_retry.delay()
    wait_for(lambda: result.state == "RETRY", timeout=10, message="the retry")
    return result.info, get(result)


def retry_gives_up_after_max_retries(c, get):
    return raised(lambda: get(c.always_retry.delay())), get(c.catches_its_last_retry.delay(1, b=3))


def soft_limit_is_caught_by_the_task(c, get):
    return get(c.polite.delay())


def hard_limit_raises_time_limit_exceeded(c, get):
    with pytest.raises(c.TimeLimitExceeded) as caught:
        get(c.stubborn.delay())
    return "TimeLimitExceeded", caught.value.args  # the limit, as given


def failure_comes_back_as_its_type(c, get):
    with pytest.raises(ValueError, match="as expected"):
        get(c.fail.delay())
    return "ValueError"


def an_exchange_or_a_routing_key_alone_goes_to_the_default_queue(c, get):
    return [get(c.add.apply_async((1, 2), routing_key="nowhere")),
            get(c.add.apply_async((1, 3), exchange="nowhere"))]


def soft_limit_above_hard_limit_is_refused(c, get):
    return raised(lambda: c.contradictory.delay())


def chain_passes_results_on(c, get):
    return get(c.chain(c.add.s(1, 2), c.add.s(3), c.add.s(4)).apply_async())


def group_collects_results_in_order(c, get):
    return get(c.group(c.add.s(i, i) for i in range(4)).apply_async())


def own_exception_class_is_caught_around_get(c, get):
    with pytest.raises(c.CompatError, match="own class"):
        get(c.raise_own.delay())
    return "CompatError"


def signature_options_and_forget_behave_as_celerys(c, get):
    first = c.add.s(2, 2)
    first.link(c.echo.si("first"))
    copy = first.clone()
    copy.link(c.echo.si("copy"))
    first.link(c.echo.si("first"))  # already there: once
    later = c.add.s(1, 1).set(countdown=60).apply_async(countdown=None)  # None sets nothing
    grouped = c.add.s(1, 1).set(group_id="kept")
    grouped.freeze(group_id="other")  # a signature's group stays
    chained = (c.add.s(1, 1) | c.add.s(2))()
    get(chained)
    get(c.add.delay(0, 0))  # sent after later: done after it, had later no countdown
    chained.forget()
    answer = (len(first.options["link"]), len(copy.options["link"]), later.state,
              chained.state, chained.parent.state, get(c.replaced_by_nothing.delay()),
              grouped.options["group_id"])
    later.revoke()
    return answer


def exceptions_keep_their_class_and_args(c, get):
    def caught(result, kind):
        try:
            get(result)
        except kind as exc:
            return [type(exc).__name__, list(exc.args), result.state]
        except BaseException as exc:  # noqa: BLE001 - what else comes back is the answer
            return ["not caught", type(exc).__name__]
    return (caught(c.raise_several.delay(False), c.SeveralArgs),
            caught(c.raise_several.delay(True), c.BaseFault), get(c.add.delay(1, 1)))


def errors_stand_under_celerys_bases(c, get):
    """An ``except CeleryError`` (or TaskError) around get() catches what it does on
    Celery: not a time limit, a lost worker or the broker's error."""
    errors = c._exceptions
    names = ["ImproperlyConfigured", "OperationalError", "TimeoutError", "IncompleteStream",
             "NotRegistered", "QueueNotFound", "InvalidTaskError", "MaxRetriesExceededError",
             "TaskRevokedError", "ChordError", "WorkerLostError", "SoftTimeLimitExceeded",
             "TimeLimitExceeded", "Retry", "Ignore", "Reject"]
    return {name: [base for base in ("CeleryError", "TaskError", "TaskPredicate", "KeyError")
                   if issubclass(getattr(errors, name), getattr(errors, base, KeyError))]
            for name in names}


def canvas_forms_that_celery_takes(c, get):
    one = get(c.chord(c.add.s(4, 4), c.tsum.s()).apply_async())  # a header of one signature
    last = c.add.s(2).set(task_id=str(uuid.uuid4()))
    steps = c.add.s(4) | last
    unfrozen = steps.id
    steps.freeze(last.id)  # the chain's id is its last step's
    changed = c.add.s(1, 1)
    changed.args = (2, 3)
    try:
        empty = get(c.replaced_by_an_empty_chain.delay())
    except Exception as exc:  # noqa: BLE001 - what comes back is the answer
        empty = [type(exc).__name__, str(exc)]
    nested = (get(c.group(c.add.s(1, 2) | c.group(c.add.s(1), c.add.s(2)))()),
              get(c.group((c.chord(c.echo.si(42), c.chain((c.echo.s(),))),)).delay()))
    return one, unfrozen, steps.id == last.id, get(changed.delay()), empty, nested


def a_failed_header_fails_a_group_body_with_its_error(c, get):
    body = c.group(c.add.si(2, 2), c.add.si(3, 3))
    try:
        return get(c.chain(c.group(c.add.si(1, 1), c.fail.si()), body).apply_async())
    except Exception as exc:  # noqa: BLE001 - what comes back is the answer
        return type(exc).__name__, str(exc)


def a_failed_header_fails_a_group_body_with_a_projects_own_error(c, get):
    """The class the caller catches: the worker's main process never imports it."""
    body = c.group(c.add.si(2, 2), c.add.si(3, 3))
    try:
        get(c.chord([c.add.si(1, 1), c.raise_own.si()], body).apply_async())
    except c.CompatError as exc:
        return type(exc).__name__, str(exc)


def an_exception_not_made_again_comes_back_as_celerys(c, get):
    answers = []
    for based in (False, True):
        try:
            get(c.raise_needing_two.delay(based))
        except Exception as exc:  # noqa: BLE001 - what comes back is the answer
            answers.append([type(exc).__name__, str(exc)])
    return answers


def an_exception_that_does_not_pickle_comes_back_as_celery_hands_it_on(c, get):
    """As Celery's worker and eager run: the nearest base that pickles, else its wrapper;
    the failure hook gets what the result keeps."""
    answers = []
    for kind in ("local", "lock"):
        for run in (lambda: get(c.raise_unpickleable.delay(kind)),
                    lambda: c.raise_unpickleable.apply((kind,)).get()):
            try:
                run()
            except Exception as exc:  # noqa: BLE001 - what comes back is the answer
                answers.append([type(exc).__name__, str(exc).split(" object at ")[0]])
    return answers


def autodiscovery_skips_a_path_that_is_no_package(c, get):
    """Celery's own test_loader: a class's path stands for its module, which has no tasks
    module; a package that is not there raises."""
    c.app.autodiscover_tasks(["tests.compat", "datetime.datetime"], "celery_api", force=True)
    try:
        c.app.autodiscover_tasks(["nonexistent.package"], "celery_api", force=True)
    except ModuleNotFoundError as exc:
        missing = exc.name
    return [name for name in c.app.tasks if name.startswith("datetime")], missing


def a_step_sent_again_runs_again(c, get):
    """A step frozen once keeps its id in each workflow it is sent in (Celery's own
    tests reuse signatures so); its row, finished, does not stand for the new run."""
    middle = c.add.s(1)
    middle.freeze()
    return [get(c.chain(c.add.si(n, n), middle, c.add.s(100)).apply_async()) for n in (1, 2)]


def canvas_objects_as_celery_builds_them(c, get):
    """Building workflows, no worker needed: ``|=`` chains (a dict would merge), a
    group's length is its members', a step after a chord joins its body."""
    steps = c.add.si(1, 1)
    for n in (2, 3):
        steps |= c.add.si(n, n)
    fixed = c.group(c.add.s(1, 1), c.add.s(2, 2))
    fixed.set_immutable(True)  # its members take no result from the step before
    piped = c.chord([c.add.s(1, 1), c.add.s(2, 2)], c.tsum.s()) | c.add.s(3)
    rebuilt = c.impl.Signature(json.loads(json.dumps(c.add.s(1, 2))))
    last = c.add.s(2)
    linked = c.add.s(1) | last
    linked.link(c.echo.si("done"))  # the chain's, not its last step's: that one is the user's
    twice = c.add.s(1, 1).set(link=c.echo.si("set"))  # one signature, not a list
    twice.link(c.echo.si("linked"))
    return [repr(steps).count("|"), len(fixed), bool(c.group([])), [t.immutable for t in fixed.tasks],
            isinstance(piped, c.chord), len(piped.tasks), repr(piped.body).count("|"),
            list(rebuilt.args), rebuilt.task == c.add.name, last.options.get("link"),
            repr(c.group(c.add.s(1), c.add.s(2)) | (c.tsum.s() | c.add.s(1))).count("|"),
            get((c.add.si(1, 1) | fixed).apply_async()), len(twice.options["link"])]


def piping_what_is_no_signature_is_a_type_error_and_clones_equal(c, get):
    """``sig | 10`` fails at the pipe, not as it is sent; a workflow's clone equals it; a
    group's result equals another of the same members, whatever their parents."""
    refused = []
    for sig in (c.add.s(1, 1), c.chain(c.add.s(1, 1), c.add.s(2)),  # (Celery's group
                c.chord([c.add.s(1, 1)], c.tsum.s())):  # makes a chord of anything)
        for other in (10, "add", None):
            try:
                sig | other
            except TypeError:
                refused.append(True)
            else:
                refused.append(False)
    made = (c.group(c.add.s(1, 1), c.add.s(2, 2)), c.chord([c.add.s(1, 1)], c.tsum.s()))
    results = importlib.import_module(c.impl.__name__ + ".result")
    parent = results.AsyncResult("p", app=c.app)
    member = results.AsyncResult("m1", parent=parent, app=c.app)
    same = (results.GroupResult("g", [member], app=c.app)
            == results.GroupResult("g", [results.AsyncResult("m1", app=c.app)], app=c.app))
    bodiless = isinstance(c.group(c.add.s(1, 1)) | None, c.chord)  # as Celery's
    return refused, [sig.clone() == sig for sig in made], same, bodiless


def get_raises_a_failed_parents_error_though_its_own_task_is_done(c, get):
    """As Celery's test_propagates_for_parent: the parents first, whenever it looks."""
    done = c.add.delay(40, 44)
    get(done)  # done now, and read by another handle than the one below
    results = importlib.import_module(c.impl.__name__ + ".result")
    failed = results.EagerResult(str(uuid.uuid4()), KeyError("foo"), "FAILURE")
    late = results.AsyncResult(done.id, parent=failed, app=c.app)
    return raised(lambda: late.get(timeout=T)), late.get(timeout=T, follow_parents=False)


def a_retry_from_on_failure_runs_the_task_again(c, get):
    """Its second run's failure ends it. Meanwhile Celery's shows the first run's failure,
    then the Retry as one; miniq's shows RETRY."""
    sent = c.fails_each_run.delay()
    deadline = time.monotonic() + T
    while time.monotonic() < deadline:
        now = c.app.AsyncResult(sent.id)  # afresh: Celery's keeps a failure it read
        if now.state == "FAILURE" and str(now.result) == "run 1":
            return "run 1"
        time.sleep(0.02)
    return "timed out"


def the_current_task_is_where_celerys_state_module_keeps_it(c, get):
    state = importlib.import_module(c.impl.__name__ + "._state")
    return (get(c.found_in_state.delay()), get(c.calls_found_in_state.delay()),
            state.get_current_task())


def a_chords_members_may_be_set_anew(c, get):
    """As a library that sets headers deep in a workflow does: sig.tasks = [...]."""
    made = c.chord([c.add.s(1, 1)], c.tsum.s())
    made.tasks = [c.add.s(2, 2), c.add.s(3, 3)]
    return len(made.tasks), get(made.apply_async())


def an_empty_group_in_a_chain_is_skipped(c, get):
    return (get(c.chain(c.add.si(1, 1), c.group([]), c.add.s(5)).apply_async()),
            get((c.add.si(1, 1) | c.add.s(2) | c.group([])).apply_async()))


def chord_headers_replacements_and_keys_as_celerys(c, get):
    """A chain as a chord's header is its steps side by side; a task replaced by a group
    fails with ChordError (a next step that is a group changes nothing); Celery's
    signature keys are attributes."""
    side_by_side = get(c.chord(c.chain(c.add.si(1, 1), c.add.si(10, 10)), c.tsum.s()).delay())
    sent = c.chain(c.replaced_by_a_failing_group.si(), c.group(c.add.s(1), c.add.s(2))).delay()
    try:
        replaced = get(sent.parent)
    except Exception as exc:  # noqa: BLE001 - what comes back is the answer
        replaced = type(exc).__name__
    sig, body = c.add.s(1, 1), c.chord([c.add.s(1, 1)], c.tsum.s())
    sig.id, sig.root_id, sig.parent_id = "mine", "root", "parent"
    body.body = c.add.s(1)
    eager = c.Celery("eager", set_as_current=False, task_always_eager=True)

    @eager.task(name="plus")
    def plus(x, y):
        return x + y
    nested = c.group(plus.s(1, 2) | c.group(plus.s(1), plus.s(2))).delay()
    return (side_by_side, replaced, sorted(sig.options.items()), body.body.task == c.add.name,
            len(nested.results), nested.get())


def wait_for_lines(path, count):
    """The lines of a file hooks or receivers write to, once there are count (Celery may
    store a result before its last hook or signal), or what there is after T seconds."""
    deadline = time.monotonic() + T
    while True:
        text = open(path).read().splitlines() if os.path.exists(path) else []
        if len(text) >= count or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def hooks_of_a_base_class_run_around_each_run(c, get):
    folder = tempfile.mkdtemp()
    ok, bad, again = (os.path.join(folder, name) for name in ("ok", "bad", "again"))
    get(c.noted.delay(ok, False))
    with pytest.raises(c.CompatError):
        get(c.noted.delay(bad, True))
    get(c.noted.delay(again, "retry"))
    return wait_for_lines(ok, 3), wait_for_lines(bad, 3), wait_for_lines(again, 5)


def a_hard_time_limit_calls_the_failure_hooks(c, get):
    path = os.path.join(tempfile.mkdtemp(), "hung")
    with pytest.raises(c.TimeLimitExceeded):
        get(c.noted.apply_async((path, "hang"), time_limit=1))
    lines = wait_for_lines(path, 3)
    return lines, get(c.noted.delay(path + "2", False))  # and the worker goes on


def hooks_after_a_hard_limit_find_the_failure_stored(c, get):
    hung = os.path.join(tempfile.mkdtemp(), "hung")
    with pytest.raises(c.TimeLimitExceeded):
        get(c.peeked.apply_async((hung, "hang"), time_limit=1))
    return wait_for_lines(hung, 2)


def the_current_task_and_uuid(c, get):
    utils = importlib.import_module(c.impl.__name__ + ".utils")
    ids = c.impl.uuid(), utils.uuid()
    return (get(c.sees_itself.delay()), bool(c.impl.current_task),
            [len(i.split("-")) == 5 and len(i) == 36 for i in ids],
            get(c.calls_current_name.delay()), c.current_name())


def a_missing_argument_fails_at_the_call(c, get):
    return raised(lambda: c.add.delay(1))


def inspect_answers_for_each_worker(c, get):
    inspect = c.app.control.inspect(timeout=T, limit=1)  # limit: back at the first reply
    replies = inspect.ping(), inspect.registered(), inspect.stats()
    if None in replies:
        raise NoAnswer(f"the {c.impl.__name__} worker did not answer inspect()")
    pings, registered, stats = replies
    return (list(pings.values()), [c.add.name in names for names in registered.values()],
            [each["pool"]["max-concurrency"] for each in stats.values()],
            sorted({*pings, *registered, *stats}) == [f"celery@{socket.gethostname()}"])


def a_base_with_its_own_init(c, get):
    return get(c.opened.delay())


def time_options_and_the_apps_clock_as_celerys(c, get):
    now = c.app.now()
    return (get(c.own_expiry.delay()), get(c.own_expiry.apply_async(expires=None)),
            get(c.retried_at_once.delay()), c.app.uses_utc_timezone(), c.app.conf.enable_utc,
            now.utcoffset(), abs(now.timestamp() - time.time()) < T)


def an_abortable_task_stops_when_asked(c, get):
    """Celery's contrib.abortable, imported by its path."""
    path = os.path.join(tempfile.mkdtemp(), "running")
    result = c.until_aborted.delay(path)
    wait_for(lambda: os.path.exists(path), T, message="the abortable task to run")
    mine = c.until_aborted.AsyncResult(result.id)
    before = mine.is_aborted(), c.until_aborted.is_aborted(task_id=result.id)
    mine.abort()
    return type(mine).__name__, before, get(result)


def a_shadow_name_is_the_requests(c, get):
    return (get(c.shadowed.delay("x")), get(c.shadowed.apply_async(("y",), shadow="given")),
            get(c.whoami.delay()) is not None)


def settings_left_unset_read_as_celerys(c, get):
    conf = c.app.conf
    return [conf.worker_redirect_stdouts, conf.worker_redirect_stdouts_level,
            conf.worker_hijack_root_logger, conf.worker_log_format, conf.task_track_started,
            conf.task_serializer, conf.accept_content, conf.task_default_exchange_type,
            conf["worker_disable_rate_limits"], conf.get("task_default_rate_limit")]


def task_classes_as_celery_makes_them(c, get):
    """A base's __call__ keeps the request; the function is the run; on_bound runs;
    push_request lays fields over the current request, as a unit test uses it."""
    c.whoami.push_request(id="given")
    try:
        pushed = c.whoami.run(), c.whoami()
    finally:
        c.whoami.pop_request()
    return (get(c.in_context.delay(3)), get(c.own_run.delay()), c.own_run(), pushed,
            c.whoami.request.id, get(c.nested.delay(0)), get(c.nested.delay(2)),
            c.Task.name, c.add.abstract)


def ignore_after_storing_the_result_by_hand(c, get):
    return get(c.stored_by_hand.delay())


def reject_without_requeue_fails(c, get):
    result = c.reject.delay()
    return raised(lambda: get(result)), result.state


def dont_autoretry_for_is_not_retried(c, get):
    with pytest.raises(KeyError) as caught:
        get(c.picky.delay())
    return str(caught.value)


def rate_limits_space_the_starts(c, get):
    sent = [c.paced.delay() for _ in range(4)] + [c.annotated.delay() for _ in range(4)]
    starts = [get(result) for result in sent]
    spans = max(starts[:4]) - min(starts[:4]), max(starts[4:]) - min(starts[4:])
    return [span >= 0.25 for span in spans]  # 10/s: 0.3 s from the first start to the fourth


def task_signals_run_around_each_run(c, get):
    folder = tempfile.mkdtemp()
    ok, bad = os.path.join(folder, "ok"), os.path.join(folder, "bad")
    get(c.signalled.delay(3, signal_log=ok))
    with pytest.raises(c.CompatError):
        get(c.signalled.delay(4, fail=True, signal_log=bad))
    return wait_for_lines(ok, 3), wait_for_lines(bad, 3)


def a_chords_callback_that_never_ran_sends_no_signal(c, get):
    """A member failed, so the callback fails unrun: the member had its task_failure;
    the callback has none (an error tracker would count the failure twice)."""
    log = os.path.join(tempfile.mkdtemp(), "callback")
    failed = c.chord([c.fail.si(), c.add.si(1, 1)], c.signalled.s(signal_log=log)).delay()
    return raised(lambda: get(failed)), failed.state, os.path.exists(log)


def _terminated_with_usr1(c, get, task, folder, name, **kwargs):
    """Send task, wait until it runs, revoke it with terminate and SIGUSR1; then, once its
    postrun is logged (its outcome stored): (what get gives, its state, the signal log)."""
    ready, log = os.path.join(folder, f"ready-{name}"), os.path.join(folder, f"log-{name}")
    result = task.delay(ready=ready, signal_log=log, **kwargs)
    deadline = time.monotonic() + T
    while not os.path.exists(ready):
        if time.monotonic() > deadline:
            raise NoAnswer(f"the task did not start in {T} s")
        time.sleep(0.02)
    result.revoke(terminate=True, signal="SIGUSR1")
    lines = wait_for_lines(log, 4)
    result = c.app.AsyncResult(result.id)
    return raised(lambda: get(result)), result.state, lines


def terminate_with_a_signal_the_task_handles(c, get):
    """task_revoked at once; then, once it ends, the task's own outcome, as it lives on
    after the signal (Celery stores REVOKED meanwhile: miniq's README says so)."""
    folder = tempfile.mkdtemp()
    return [_terminated_with_usr1(c, get, c.until_usr1, folder, str(fail), fail=fail)
            for fail in (False, True)]


def a_sigusr1_is_a_soft_time_limit_in_the_task(c, get):
    """revoke(terminate=True, signal="SIGUSR1"): the task may clean up and end its way."""
    return _terminated_with_usr1(c, get, c.until_soft_limit, tempfile.mkdtemp(), "soft")


def request_fields_of_a_plain_call(c, get):
    r = get(c.request_view.delay())
    return (r["hostname"] == f"celery@{socket.gethostname()}", r["delivery_info"],
            r["root_id"] == r["id"], r["parent_id"], r["group"], r["eta"], r["expires"],
            r["timelimit"], r["headers"], r["correlation_id"], r["ignore_result"], r["utc"],
            r["properties"] == {"correlation_id": r["id"], "priority": 0})


def chord_fields_of_a_plain_call(c, get):
    """A task outside a chord or group, called directly, or a chord's callback."""
    return (get(c.chord_fields.delay()), c.chord_fields.apply().get(), c.chord_fields(),
            get(c.chord([c.add.s(1, 1)], c.chord_fields.s()).delay()))


def request_fields_of_a_call_with_options(c, get):
    r = get(c.request_view.apply_async(countdown=0.1, expires=60, priority=3, time_limit=20,
                                       soft_time_limit=10, headers={"x_note": 1}))
    eta, expires = (datetime.fromisoformat(r[key]) for key in ("eta", "expires"))
    # a header named "headers" (where tracers put theirs) is the request's headers
    traced = get(c.request_view.apply_async(headers={"x_note": 2, "headers": {"trace": "t"}}))
    return (eta.utcoffset(), 59 < (expires - eta).total_seconds() < 60,
            r["delivery_info"]["priority"], r["timelimit"], r["headers"], r["x_note"],
            traced["headers"], traced["x_note"])


def how_a_run_shows_its_call(c, get):
    """request.argsrepr and kwargsrepr: the arguments as logs show them, or as the sender
    said to (a secret hidden)."""
    return (get(c.call_shown.delay(1, "a", k=2)),
            get(c.call_shown.apply_async((1,), argsrepr="(<hidden>,)", kwargsrepr="{}")))


def parent_and_root_of_a_task_sent_by_a_task(c, get):
    outer = c.spawner.delay()
    inner = get(c.app.AsyncResult(get(outer)))
    return inner["parent_id"] == outer.id, inner["root_id"] == outer.id


def a_run_lists_the_tasks_it_sent_as_its_childrens_results(c, get):
    return get(c.trail_keeper.delay())


def a_chain_step_sees_the_steps_after_it(c, get):
    """Last step first; the last step's chain is empty, a plain call's None, a chord's
    callback's None unless steps follow it."""
    steps = c.chain(c.chain_view.s(), c.add.si(1, 1), c.chain_view.si()).delay()
    header = c.group(c.add.si(1, 1), c.add.si(2, 2))
    return (get(steps.parent.parent), get(steps), get(c.chain_view.delay()),
            get(c.chord([c.add.si(1, 1)], c.chain_view.s()).delay()),
            get(c.chain(header, c.chain_view.s()).delay()),
            get(c.chain(header, c.chain_view.s(), c.echo.s()).delay()),
            get(c.chord([c.add.si(1, 1)], c.chain_view.s() | c.echo.s()).delay()))


def group_members_know_their_group(c, get):
    result = c.group(c.request_view.s(), c.request_view.s()).apply_async()
    return [r["group"] == result.id for r in get(result)]


def a_chain_in_a_group_runs_as_a_chain(c, get):
    fixed = c.group(c.add.si(1, 1) | c.add.si(2, 2), c.add.si(3, 3))
    passed = c.group(c.add.s(1, 1) | c.add.s(10), c.add.s(3, 3))
    in_chord = c.chord([c.add.s(1, 1) | c.add.s(10), c.add.s(3, 3)], c.echo.s())
    return len(fixed.tasks), get(fixed.apply_async()), get(passed.apply_async()), get(
        in_chord.apply_async())


def immutable_signatures_ignore_the_previous_result(c, get):
    made = [c.signature(c.add.name, (10, 20), immutable=True),
            c.add.signature((10, 20), immutable=True), c.add.s(10, 20).set(immutable=True)]
    return [get(c.chain(c.add.s(1, 2), sig).apply_async()) for sig in made]


def an_empty_chord_runs_its_body_at_once(c, get):
    return get(c.chord([], c.echo.s()).apply_async())


def workflows_print_as_calls(c, get):
    add, echo = c.add, c.echo
    return (repr(add.s(2, y=2)), repr(add.si(2, 2)), repr(add.s(4, 4) | add.s(8) | echo.s()),
            repr(c.group(add.s(1, 1) | echo.s(), add.s(3, 3))), repr(c.group([add.s(1, 1)])),
            repr(c.group([])), repr(c.chord([add.s(1, 1), add.s(2, 2)], echo.s())),
            repr(c.chord([], add.s(5))), repr(add.map([1, 2])), repr(add.starmap([(1, 2)])),
            repr(add).replace(hex(id(c.app)), "ID"))


# Canvas (issue 12): each form of Celery's canvas guide, with the result Celery gives

def calling_a_signature_runs_it_here(c, get):
    add = c.add  # sig(): the task's function, called in this process as a function call is
    return add.s(2, 2)(), add.s("b")("a"), add.s(x="a")(y="b"), get(add.s(2, 2).delay())


def calling_a_workflow_sends_it(c, get):
    add, tsum = c.add, c.tsum
    sent = [c.chain(add.s(2, 2), add.s(4), add.s(8))(), (add.s(2, 2) | add.s(4) | add.s(8))(),
            c.group(add.s(i, i) for i in range(10))(),
            c.chord((add.s(i, i) for i in range(10)), tsum.s())(),
            c.chord(add.s(i, i) for i in range(100))(tsum.s())]
    return [(type(result).__name__, get(result)) for result in sent]


def partial_workflows_take_the_missing_arguments(c, get):
    add, mul = c.add, c.mul
    return (get(c.group(add.s(i) for i in range(10))(10)), get((add.s(4) | mul.s(8))(16)),
            get(c.chain(add.s(4) | mul.s(8))(4)),
            get((add.s(4, 16) | mul.s(2) | (add.s(4) | mul.s(8)))()),
            get((add.s("b") | add.s("c"))("a")), get(c.group(add.s("x"), add.s("y")).delay("a")))


def an_immutable_chain_keeps_each_result(c, get):
    result = (c.add.si(2, 2) | c.add.si(4, 4) | c.add.si(8, 8))()
    return get(result), get(result.parent), get(result.parent.parent)


def a_group_piped_into_a_task_is_a_chord(c, get):
    add, tsum = c.add, c.tsum
    piped = c.group(add.s(i, i) for i in range(10)) | tsum.s()
    lone = c.group([add.s(2, 5)]) | tsum.s()  # piped, a group of one stays a chord
    unrolled = c.chain(c.group(add.s(1, 1)), add.s(2))  # in a chain, it is its one task
    return isinstance(piped, c.chord), get(piped()), get(lone()), get(unrolled())


def a_task_piped_into_a_group_gives_the_group_result(c, get):
    add = c.add
    fixed = (add.s(4, 4) | c.group(add.si(i, i) for i in range(10)))()
    passed = (add.s(2, 2) | c.group(add.s(1), add.s(2)))()
    chains = (add.s(5, 6) | c.group((add.s(1) | add.s(2), add.s(3))))()
    return (type(fixed).__name__, get(fixed), get(fixed.parent), get(passed), get(chains))


def tasks_themselves_stand_for_their_signatures_in_a_chords_header(c, get):
    """As in Celery's own test of a group in the center of a chain: chord([tsum, tsum])."""
    return get(c.chord([c.current_name, c.current_name], c.current_name.si()).apply_async())


def a_group_inside_a_chain_is_a_chord_with_the_rest(c, get):
    add, echo, tsum = c.add, c.echo, c.tsum
    mid = c.chain(echo.s(42), c.group(echo.s(), echo.s()), echo.s())()
    summed = (add.s(2, 2) | c.group(add.s(i) for i in range(4)) | tsum.s())()
    lone = c.chain(add.s(2, 2), c.group(add.s(1)), add.s(1))()  # a group of one: unrolled
    nested = c.chain(add.si(1, 0), c.group(add.si(1, 100), c.chain(
        add.si(1, 200), c.group(add.si(1, 1000), add.si(1, 2000)))), add.si(1, 10))()
    twice = (add.si(1, 0) | c.group(add.s(1), add.s(1)) | tsum.s() | add.s(1)
             | c.group(add.s(1), add.s(1)))()
    return get(mid), get(summed), get(lone), get(nested), get(twice)


def composed_workflows_print_as_celery_prints_them(c, get):
    add, tsum = c.add, c.tsum
    return (repr(c.chain(add.s(2, 2), c.group(add.s(1), add.s(2)), add.s(1))),
            repr(c.chain(add.s(2, 2), c.group(add.s(1)), add.s(1))),
            repr(c.group(add.s(1, 1), add.s(2, 2)) | tsum.s()))


def groups_of_groups_are_flattened(c, get):
    add, echo = c.add, c.echo
    deep = c.group(add.si(1, 10), c.group(add.si(1, 100), c.group(add.si(1, 1000),
                                                                  add.si(1, 2000))))()
    lone = c.group(c.group(echo.s(42), echo.s(42))).delay()
    in_chord = c.chord((c.group(echo.s(42), echo.s(42)),), echo.s()).delay()
    kept = c.chord(c.group(c.chain(echo.s(42), c.group(echo.s(), echo.s()))), echo.s()).delay()
    return get(deep), get(lone), get(in_chord), get(kept)


def chords_in_chains_and_chains_in_chords(c, get):
    add, echo, tsum, chord, group = c.add, c.echo, c.tsum, c.chord, c.group
    then = c.chain(chord([add.s(1, 1), add.s(2, 2)], tsum.s()), add.s(10))()
    explicit = c.chain(chord(group(add.si(1, 0), add.si(1, 0)), tsum.s()),
                       chord(group(add.s(1), add.s(1)), tsum.s()),
                       chord(group(add.s(0), add.s(0)), tsum.s()))()
    into = (add.si(1, 0) | group(add.s(1), add.s(1)) | tsum.s() | add.s(1)
            | chord(group(add.s(1), add.s(1)), tsum.s()))()
    in_group = group(echo.si(1), c.chain(echo.si(2), chord([add.si(1, 1), add.si(2, 2)],
                                                          tsum.s())))()
    deep = c.chain(echo.si(1), chord([echo.si(2), c.chain(echo.si(3), chord(
        [echo.si(4), echo.si(5)], echo.si(6)))], echo.si(7)))()
    members = group((chord((echo.si(42),), echo.s()),))()
    nested = chord([chord([add.s(1, 2), add.s(3, 4)], add.s([5])),
                    chord([add.s(6, 7)], add.s([10]))], echo.s())()
    piped = (group([group([group([group([add.s(1, 2)]) | add.s([3])]) | add.s([4])])
                    | add.s([5])]) | add.s([6]))()
    return [get(r) for r in (then, explicit, into, in_group, deep, members, nested, piped)]


def chord_bodies_that_are_chains_or_groups(c, get):
    add, echo, tsum = c.add, c.echo, c.tsum
    chained = c.chord([add.s(1, 1), add.s(2, 2)], tsum.s() | add.s(10))()
    grouped = c.chord([add.s(1, 1), add.s(2, 2)], c.group(tsum.s(), echo.s()))()
    failing = c.chord([add.s(1, 1), c.fail.si()], tsum.s() | add.s(10))()
    return (type(chained).__name__, get(chained), type(grouped).__name__, get(grouped),
            get(chained.parent), raised(lambda: get(failing)))  # as Celery's: the header


def link_calls_back_with_the_result(c, get):
    folder = tempfile.mkdtemp()
    one, two, three, four = (os.path.join(folder, name) for name in "abcd")
    first = get(c.add.apply_async((2, 2), link=c.jot.s(log=one)))
    get(c.add.apply_async((3, 3), link=[c.jot.s(log=two), c.jot.si("fixed", log=two)]))
    sig = c.add.s(5, 5)
    sig.link(c.jot.s(log=three))
    sig.link(c.mul.s(2) | c.jot.s(log=three))
    get(sig.delay())
    chained = get((c.add.s(1, 1) | c.add.s(2)).apply_async(link=c.jot.s(log=four)))
    five = os.path.join(folder, "e")  # a chain's last step a group: each member calls back
    get(c.chain(c.add.s(1, 1), c.group(c.mul.s(2), c.mul.s(3))).apply_async(
        link=c.jot.s(log=five)))
    return (first, wait_for_lines(one, 1), sorted(wait_for_lines(two, 2)),
            sorted(wait_for_lines(three, 2)), chained, wait_for_lines(four, 1),
            sorted(wait_for_lines(five, 2)))


def ids_replaced(lines, result):
    """The lines, this result's id written <this>, any other task id <other>."""
    text = "\n".join(lines).replace(result.id, "<this>")
    return re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<other>",
                  text).splitlines()


def errbacks_get_celerys_arguments(c, get):
    folder = tempfile.mkdtemp()
    new, old, both, chosen, fixed = (os.path.join(folder, name) for name in "abcde")
    sent = [(c.fail.apply_async(link_error=c.log_error.s(log=new)), new, 1),
            (c.fail.apply_async(link_error=c.log_failed_id.s(log=old)), old, 1),
            (c.fail.apply_async(link_error=[c.log_error.s(log=both),
                                            c.log_failed_id.s(log=both)]), both, 2),
            (c.fail.s().on_error(c.log_error.s(log=chosen)).delay(), chosen, 1),
            (c.fail.apply_async(link_error=c.jot.si("fixed", log=fixed)), fixed, 1)]
    return [(raised(lambda: get(result)), sorted(ids_replaced(wait_for_lines(path, n), result)))
            for result, path, n in sent]


def an_eager_run_calls_its_links(c, get):
    """apply() runs here; as Celery's, so do its errbacks (each, whatever it takes), and
    its callbacks are sent with its value."""
    folder = tempfile.mkdtemp()
    errors, linked = (os.path.join(folder, name) for name in "ab")
    failed = c.fail.apply(link_error=[c.log_error.s(log=errors), c.log_failed_id.s(log=errors)])
    noted = sorted(ids_replaced(wait_for_lines(errors, 2), failed))
    done = c.add.apply((2, 3), link=c.jot.s(log=linked))
    return failed.state, noted, done.get(), wait_for_lines(linked, 1)


def an_eager_chain_gives_each_step_the_calls_options(c, get):
    """As Celery's eager chain: each step takes its options and the call's (a task_id, an
    errback, a priority), and a link is the last step's (each member's of a last group);
    None for the arguments is none."""
    folder = tempfile.mkdtemp()
    linked, errors, grouped = (os.path.join(folder, name) for name in "abc")
    done = c.chain(c.add.s(1, 1), c.add.s(2)).apply(link=c.jot.s(log=linked), task_id="cid")
    in_group = c.chain(c.add.s(1, 1), c.group(c.add.s(10), c.add.s(20))).apply(
        link=c.jot.s(log=grouped))
    own = c.chain(c.its_priority.si(), c.its_priority.si()).set(priority=7).apply()
    stopped = raised(lambda: c.chain(c.add.s(1, 1), c.fail.si(), c.add.s(1)).apply(
        link_error=c.log_failed_id.s(log=errors)))
    return (done.get(), done.id, wait_for_lines(linked, 1), in_group.get(),
            sorted(wait_for_lines(grouped, 2)), own.get(), own.parent.get(), stopped,
            len(wait_for_lines(errors, 1)), c.add.s(1, 2).apply(None).get(),
            c.chain(c.add.s(1, 2), c.add.s(1)).apply(None, None).get(),
            get(c.chain(c.add.s(1, 2), c.add.s(1)).apply_async(None, None)),
            get(c.group(c.add.s(1, 2)).apply_async(None, None)),
            repr(c.add.s(1, 2).clone(None, None)))


def a_chords_countdown_delays_its_header_alone(c, get):
    """As Celery's (its issue 7851): the callback has no eta of its own, and an empty
    header's callback is sent at once."""
    sent = c.chord([c.has_eta.s()], c.has_eta.s()).apply_async(countdown=1)
    return get(c.chord([], c.has_eta.s()).apply_async(countdown=1)), get(sent), get(sent.parent)


def errbacks_of_a_chord_body_run_when_a_member_fails(c, get):
    folder = tempfile.mkdtemp()
    new, old, linked = (os.path.join(folder, name) for name in "abc")
    header = [c.add.s(1, 1), c.fail.s()]
    by_new = c.chord(header, c.tsum.s().on_error(c.log_error.s(log=new)))()
    by_old = (c.group(header) | c.tsum.s().on_error(c.log_failed_id.s(log=old))).delay()
    workflow = c.chord(header, c.tsum.s())
    workflow.link_error(c.log_error.s(log=linked))
    by_link = workflow.delay()
    # get() raises the member's own error (as Celery, it looks at the header first); the
    # callback's stored error is a ChordError that names the member
    return [(raised(lambda: get(result)), result.state, type(result.result).__name__,
             ids_replaced([str(result.result)], result) + ids_replaced(wait_for_lines(path, 1),
                                                                       result))
            for result, path in ((by_new, new), (by_old, old), (by_link, linked))]


def a_chord_member_revoked_before_it_was_sent_fails_the_chord(c, get):
    """As Celery's worker meets a revoked id: the member counts, revoked, and the body fails
    naming it (not run with None in its place, nor waiting for ever)."""
    def revoked():
        sig = c.add.s(2, 2).set(task_id=str(uuid.uuid4()))
        c.app.control.revoke(sig.id, reply=True, timeout=5, limit=1)  # once it knows
        return sig
    sent = [c.chord([c.add.s(1, 1), revoked()], c.echo.s()).apply_async(),
            c.chord([revoked()], c.echo.s()).apply_async()]
    for result in sent:
        raised(lambda: get(result))  # noqa: B023 - called at once
    return [(result.state, ids_replaced([str(result.result)], result),
             ids_replaced([result.traceback.strip().rsplit("ChordError: ", 1)[-1]], result))
            for result in sent]


def a_group_after_a_group_in_a_chain_follows_its_results(c, get):
    """Walking .parent from a chain's last group: the group before it, then the first step
    (not the step that passes the first group's results on)."""
    add, echo_all = c.add, c.echo_all
    node = c.chain(add.s(1, 1), c.group(add.s(1), add.s(2)),
                   c.group(echo_all.s(), echo_all.s())).apply_async()
    walked = []
    while node is not None:
        walked.append((type(node).__name__, get(node)))
        node = node.parent
    return walked


def errbacks_count_only_the_arguments_left_free(c, get):
    """Celery 5.7: an errback with a partial argument is called with the failed task's id
    first; a new-style one gets the failed task's request; a group's maybe_throw raises."""
    folder = tempfile.mkdtemp()
    partial, request = os.path.join(folder, "a"), os.path.join(folder, "b")
    first = c.fail.apply_async(link_error=c.log_failed_id_with.s("extra", log=partial))
    second = c.fail.apply_async(link_error=c.log_request.s(log=request))
    members = c.group(c.add.s(1, 1), c.fail.s()).apply_async()
    raised(lambda: get(members))
    return (ids_replaced(wait_for_lines(partial, 1), first), wait_for_lines(request, 1),
            members.supports_native_join, raised(members.maybe_throw),
            members.results[0].maybe_throw())


def callbacks_given_to_a_chain_stay_with_its_steps(c, get):
    """A chain's own link and link_error hold when it is a chord's body, when it is
    piped into another step, and a chord's call link goes to its body's last step."""
    folder = tempfile.mkdtemp()
    in_chord, piped, called = (os.path.join(folder, name) for name in "abc")
    failing = c.chord([c.add.s(1, 1)], c.chain(c.tsum.s(), c.fail.si()))
    failing.link_error(c.log_failed_id.s(log=in_chord))
    extended = c.chain(c.add.si(1, 1), c.fail.si()).on_error(c.log_failed_id.s(log=piped))
    extended |= c.add.si(0, 0)
    linked = c.chord([c.add.s(1, 1)], c.chain(c.tsum.s(), c.add.s(10))).apply_async(
        link=c.jot.s(log=called))
    return (raised(lambda: get(failing.delay())), raised(lambda: get(extended.delay())),
            get(linked), len(wait_for_lines(in_chord, 1)), len(wait_for_lines(piped, 1)),
            wait_for_lines(called, 1))


def a_chords_call_options_link_its_callback_only(c, get):
    folder = tempfile.mkdtemp()
    ok, bad = (os.path.join(folder, name) for name in "ab")
    linked = c.chord([c.add.s(1, 1), c.add.s(2, 2)], c.tsum.s()).apply_async(
        link=c.jot.s(log=ok))
    failing = c.chord([c.fail.s(), c.add.s(1, 1)], c.tsum.s()).apply_async(
        link_error=c.log_failed_id.s(log=bad))
    return (get(linked), wait_for_lines(ok, 1), raised(lambda: get(failing)),
            ids_replaced(wait_for_lines(bad, 1), failing))


def an_ignored_result_goes_on_but_is_not_kept(c, get):
    """ignore_result: the next step gets the value and an errback is called, while the
    task itself keeps no state."""
    chained = (c.fire_and_forget.s(5) | c.add.s(1))()
    errback = c.echo.s().set(task_id=str(uuid.uuid4()))
    failed = c.fail_quietly.apply_async(link_error=errback)
    callback = str(uuid.uuid4())
    c.calls_back_later.delay(callback)
    return (get(chained), chained.parent.state,
            get(c.app.AsyncResult(errback.id)) == failed.id, failed.state,
            get(c.app.AsyncResult(callback)))


def a_chords_keyword_arguments_go_to_its_members(c, get):
    own = c.chord([c.echo_all.s(1)], c.echo_all.s(), args=(7,), kwargs={"kwargs": {"own": 1}})
    return (get(c.chord([c.echo_all.s(1), c.echo_all.s(2)], c.echo_all.s()).delay(k=5)),
            get(own.apply_async((9,), {"k": 5})))  # with its own, where Celery keeps them


def the_children_of_a_chords_sender_are_its_header(c, get):
    senders = [c.sends_a_chord.delay(body) for body in ("task", "chain", "group", "own group")]
    chained = (c.add.s(1, 1) | c.group(c.add.s(1), c.add.s(2)) | c.tsum.s())()
    get(chained)
    shapes = []
    for sender in senders:
        get(sender)  # it returns None; then it lists what it sent
        shapes.append([(type(child).__name__, get(child)) for child in sender.children])
    return shapes, [len(child.results) for child in chained.parent.parent.children]


def revoke_with_reply_answers_for_each_worker(c, get):
    get(c.add.delay(1, 1))  # the worker is up
    task_id = str(uuid.uuid4())
    replies = c.app.control.revoke(task_id, reply=True, timeout=5, limit=1)  # one worker
    nothing = c.app.control.revoke(None, reply=True, timeout=5, limit=1)  # None is no ids
    return (c.app.control.revoke(str(uuid.uuid4())),
            [(node == f"celery@{socket.gethostname()}", answer["ok"].replace(task_id, "<id>"))
             for one in replies for node, answer in one.items()],
            [answer["ok"] for one in nothing for answer in one.values()])


def get_of_a_chain_stopped_by_a_revoked_step_raises(c, get):
    result = c.chain(c.add.s(1, 1).set(countdown=1), c.add.s(1), c.add.s(2)).apply_async()
    result.parent.revoke()  # the middle step, before the first one has run
    return raised(lambda: result.get(timeout=T)), result.parent.state, result.state


def a_groups_call_refuses_link_and_link_error(c, get):
    members = c.group(c.add.s(1, 1), c.add.s(2, 2))
    return (raised(lambda: members.apply_async(link=c.tsum.s())),
            raised(lambda: members.apply_async(link_error=c.log_failed_id.s(log="x"))))


def the_retries_option_is_the_requests_count(c, get):
    return (get(c.retries_seen.apply_async(retries=2)),
            get(c.app.send_task(c.retries_seen.name, retries=3)))


def several_links_are_one_group(c, get):
    result = c.add.apply_async((3, 4), link=[c.mul.s(2), c.mul.s(3)])
    get(result)
    children = result.children
    return [type(child).__name__ for child in children], get(children[0])


def map_starmap_and_chunks(c, get):
    add, tsum = c.add, c.tsum
    mapped = tsum.map([list(range(10)), list(range(100))]).delay()
    starred = add.starmap(zip(range(10), range(10))).apply_async(countdown=0.1)
    here = add.chunks(zip(range(10), range(10)), 5)()
    there = add.chunks(zip(range(10), range(10)), 5).apply_async()
    as_group = add.chunks(zip(range(10), range(10)), 5).group()
    return (get(mapped), get(starred), type(here).__name__, get(here), get(there),
            isinstance(as_group, c.group), get(as_group()))


def replace_gives_the_replacement_result(c, get):
    add = c.add
    alone = c.add_replaced.delay(2, 3)
    in_chain = (add.s(2, 2) | add.s(4) | c.add_replaced.s(8) | add.s(16))()
    by_group = c.add_to_all.delay([1, 2], 10)
    group_in_chain = (add.s(2, 2) | c.group(add.s(i) for i in range(4)) | c.add_to_all.s(8))()
    by_chain = c.replace_with_chain.delay(1)
    body = c.chord([c.chord([add.s(1, 2), add.s(3, 4)], add.s([5])),
                    c.chord([add.s(6, 7)], add.s([10]))], c.add_to_all.s(["A"]))()
    return [get(r) for r in (alone, in_chain, by_group, group_in_chain, by_chain, body)]


def a_replacement_runs_as_the_task_itself(c, get):
    """As Celery's: a task takes the replaced task's id, so its result is the task's, it
    is among its sender's children, and it is revoked with the task."""
    me = c.replaced_by_whoami.delay()
    failing = c.fail_replaced.delay()
    sender = c.sends_a_replaced_task.delay()
    sent = c.app.AsyncResult(get(sender))
    get(sent)
    folder = tempfile.mkdtemp()
    ready, gate = os.path.join(folder, "ready"), os.path.join(folder, "gate")
    revoked = c.replaced_once_open.delay(ready, gate)
    _wait_for_file(ready)
    revoked.revoke()  # while it runs, before it replaces itself
    open(gate, "w").close()
    return (get(me) == me.id, me.children, raised(lambda: get(failing)),
            "ValueError" in (failing.traceback or ""), [r.id for r in sender.children] == [sent.id],
            raised(lambda: get(revoked)), revoked.state)


def _wait_for_file(path):
    deadline = time.monotonic() + T
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise NoAnswer(f"{path} never appeared")
        time.sleep(0.02)


def a_retrys_arguments_merge_with_the_calls(c, get):
    """Celery 5.7's: new args replace what the call gave the same parameters by name;
    new kwargs replace what it gave them by position."""
    return (get(c.retried_with_new_args.delay(x=1, y=2)),
            get(c.retried_with_new_kwargs.delay(1, 2)))


def _doubled(x):
    return x * 2


def tasks_are_registered_as_celery_registers_them(c, get):
    """A name taken keeps its first function; a name not there is NotRegistered; a
    function may come with options; calls are checked against the decorated function."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Celery 5.7 and miniq warn; 5.6 does not

        @c.app.task(name=c.add.name)
        def times(x, y):
            return x * y
    made = c.app.task(_doubled, name="compat.doubled")  # a function given with options
    return (times(2, 3), get(times.delay(2, 3)), raised(lambda: c.app.tasks["no.such.task"]),
            made(4), get(c.uses_a_session.delay(5)))  # checked as its decorator takes calls


def an_unknown_task_name_is_celerys_not_registered(c, get):
    """As the worker fails it and as app.tasks refuses it: the name is its one argument."""
    errors = []
    for fetch in (lambda: c.app.tasks["no.such.task"], lambda: get(c.app.send_task("no.such.task"))):
        try:
            fetch()
        except KeyError as exc:
            errors.append(exc)
    return [(type(e).__name__, e.args, str(e), repr(e)) for e in errors]


def send_task_takes_countdown_eta_and_id_by_position(c, get):
    later = c.app.send_task(c.add.name, (1, 2), None, 60)
    state = later.state
    later.revoke()
    own = str(uuid.uuid4())
    named = c.app.send_task(c.add.name, (2, 2), None, None, None, own)
    return state, named.id == own, get(named)


def update_state_stores_any_tasks_state(c, get):
    later = c.add.apply_async((1, 1), countdown=60)
    unsent, by_caller = str(uuid.uuid4()), str(uuid.uuid4())
    marks = [c.mark_other.delay(task_id) for task_id in (later.id, unsent)]
    [get(mark) for mark in marks]
    c.add.update_state(task_id=by_caller, state="PROGRESS", meta={"from": "caller"})
    seen = [(r.state, r.info) for r in map(c.app.AsyncResult, (later.id, unsent, by_caller))]
    later.revoke()
    done = c.add.delay(2, 2)  # a SUCCESS stored stays, as Celery's backend keeps it
    get(done)
    c.add.update_state(task_id=done.id, state="PROGRESS", meta={"from": "caller"})
    done = c.app.AsyncResult(done.id)  # read afresh
    return seen == [("PROGRESS", {"from": mark.id}) for mark in marks] + [
        ("PROGRESS", {"from": "caller"})] and (done.state, get(done)) == ("SUCCESS", 4) or seen


def an_exception_stored_by_update_state_is_raised(c, get):
    by_hand, unsent = c.fails_by_hand.delay(), str(uuid.uuid4())
    c.add.update_state(task_id=unsent, state="REVOKED", meta=ValueError("by caller"))
    stored = c.app.AsyncResult(unsent)
    return (raised(lambda: get(by_hand)), by_hand.state, stored.state, repr(stored.info),
            stored.name, stored.queue, stored.args)


def a_result_returned_is_stored_as_its_ids(c, get):
    """A task that returns the result of what it sent succeeds, its value that result's
    as_tuple(), as Celery's backend stores a result; the ids lead to the values."""
    one, many = get(c.returns_what_it_sent.delay()), get(c.returns_what_it_sent.delay(True))
    (child, parent), nothing = one
    (group_id, group_parent), members = many
    return (parent, nothing, get(c.app.AsyncResult(child)), group_parent,
            [(get(c.app.AsyncResult(m)), p, more) for (m, p), more in members],
            isinstance(group_id, str))


def task_options_default_as_celerys(c, get):
    """A task that sets no option reads each as Celery's does, from app.conf's defaults."""
    options = ("acks_late", "reject_on_worker_lost", "ignore_result", "track_started",
               "max_retries", "default_retry_delay", "rate_limit", "soft_time_limit",
               "time_limit", "expires", "priority", "store_errors_even_if_ignored")
    conf = c.app.conf
    return ([getattr(c.add, name) for name in options], conf.task_reject_on_worker_lost,
            conf.task_acks_late, conf.task_default_rate_limit)


def no_exception_stored_reads_as_none(c, get):
    """A failure state stored by hand with no meta (or an empty one) reads as no
    exception, as Celery's does: its info is None, get() returns None unless it
    propagates, and then raises as Celery's does."""
    out = []
    for meta in (None, {}):
        stored = c.app.AsyncResult(str(uuid.uuid4()))
        c.add.update_state(task_id=stored.id, state="REVOKED", meta=meta)
        out += [stored.state, stored.info, stored.get(timeout=T, propagate=False),
                raised(lambda: stored.get(timeout=T))]
    return out


def on_replace_and_trail_as_celerys(c, get):
    """A base's on_replace() runs as replace() ends; trail=False keeps no children, read
    by an app that has the task or not; nor does a call's add_to_parent=False."""
    untrailed = c.sends_untrailed.delay()
    get(c.app.AsyncResult(get(untrailed)))
    conf = c.app.conf
    reader = c.Celery("reader", broker=conf.broker_url, backend=conf.result_backend,
                      set_as_current=False)
    two = c.sends_two_one_added.delay()
    added, _ = get(two)
    return (get(c.replaced_through_its_hook.delay()), untrailed.children,
            reader.AsyncResult(untrailed.id).children, [r.id for r in two.children] == [added])


def ignored_tasks_read_pending_as_they_run(c, get):
    """As Celery's: a task whose result is ignored stores no STARTED, tracked or not, as
    an idle child takes it or as it leaves the worker's reserve (two children, three)."""
    folder = tempfile.mkdtemp()
    files = {c.waits_unrecorded.delay(*paths).id: paths for paths in (
        [os.path.join(folder, f"{kind}{i}") for kind in ("ready", "gate")] for i in range(3))}
    seen, deadline = [], time.monotonic() + T
    while files and time.monotonic() < deadline:
        for task_id, (ready, gate) in list(files.items()):
            if os.path.exists(ready):  # running: read it a while (a start is written
                watched, until = set(), time.monotonic() + 0.3  # within ms), then let it end
                while time.monotonic() < until:
                    watched.add(c.app.AsyncResult(task_id).state)
                seen.append(sorted(watched))
                open(gate, "w").close()
                del files[task_id]
        time.sleep(0.01)
    return seen


def a_replacement_that_fails_fails_its_chord(c, get):
    in_chord = c.chord([c.fail_replaced.s(), c.add.s(1, 1)], c.echo.s())()
    by_group = c.fail_replaced_by_group.delay()  # as Celery's: a chord of the group, then
    by_chain = c.fail_replaced_by_group.delay(True)  # of a chain's last group
    return (raised(lambda: get(c.fail_replaced.delay())), raised(lambda: get(in_chord)),
            raised(lambda: get(by_group)), str(by_group.result).split(" raised ")[1],
            raised(lambda: get(by_chain)))


def signature_replace_group_skew_and_app_signature(c, get):
    partial = c.add.s(2).set(countdown=3)
    replaced = partial.replace(args=(5,))
    spread = c.group(c.add.s(i, i) for i in range(3)).skew(start=0, step=0.1)
    by_name = c.app.signature("tests.compat.celery_api.add", (1, 2))
    return (tuple(replaced.args), replaced.options, tuple(partial.args),
            [t.options["countdown"] for t in spread.tasks], get(by_name.delay()),
            get(spread.apply_async()),
            [repr(t.options["countdown"]) for t in spread.skew(0, step=2).tasks])


def signatures_are_data(c, get):
    sig = c.add.signature((2, 2), {"debug": True}, countdown=10)
    fresh = c.add.s(2, 2)
    frozen = fresh.freeze()
    sent = fresh.delay()
    travelled = json.loads(json.dumps(c.add.s(2, y=3).set(countdown=0.1)))
    # the app given, as a process with more than one app must (the driver resets miniq's default)
    rebuilt = [c.impl.Signature.from_dict(travelled, app=c.app), c.signature(travelled, app=c.app),
               c.impl.maybe_signature(travelled, app=c.app)]
    return (sig.args, sig.kwargs, sig.options, sig.task, sig.immutable, c.add.si(1).immutable,
            frozen.id == sent.id == fresh.id, get(sent),
            [(isinstance(r, c.impl.Signature), r.task, r.args, r.kwargs, r.options,
              get(r.delay())) for r in rebuilt], c.impl.maybe_signature(None))


def a_signature_argument_is_rebuilt_and_sent_in_a_task(c, get):
    sigs = [c.add.s(2, 2), c.add.s(1, 1) | c.add.s(10), c.add.si(5, 5).set(countdown=0.1)]
    ids = [get(c.send_signature.delay(sig)) for sig in sigs]
    return ([get(c.app.AsyncResult(i)) for i in ids],
            get(c.describe_signature.delay(c.add.s(2, y=3))))


def typed_values_travel_as_themselves(c, get):
    values = [datetime(2030, 1, 2, 3, 4, 5, 6), datetime(2030, 1, 2, tzinfo=timezone.utc),
              date(2030, 1, 2), dtime(3, 4, 5), uuid.UUID(int=7), Decimal("1.10"), b"bytes"]
    return repr(get(c.echo.delay(values)))


def a_type_json_cannot_carry_fails_at_the_call(c, get):
    return raised(lambda: c.echo.delay({1, 2})).startswith("raised")  # kombu: EncodeError


def signature_options_and_a_single_link(c, get):
    given = c.request_view.signature(options={"priority": 4})
    shapes = c.link_shapes.apply_async(link=c.echo.si(1), link_error=c.echo.si(2))
    return given.options, get(given.apply_async())["delivery_info"]["priority"], get(shapes)


def workflows_check_arguments_at_the_call(c, get):
    calls = [lambda: (c.add.s(1) | c.add.s(2)).delay(), lambda: c.chain(c.add.s(1)).delay(),
             lambda: c.group(c.add.s(1)).delay(),
             lambda: c.chord([c.add.s(1)], c.tsum.s()).delay()]
    return [raised(call) for call in calls]


def eager_results_name_their_task_and_priority(c, get):
    return c.add.apply((1, 2)).name, c.delivery_seen.apply(priority=3).get()


def a_step_that_cannot_take_the_result_fails_the_chain(c, get):
    """Sending the next step fails the task that ends before it, and the steps after."""
    ran = c.chain(c.add.s(1, 1), c.add.s(1, 2), c.add.s(3)).apply_async()
    linked = c.add.apply_async((1, 1), link=c.add.s(1, 2))
    return (raised(lambda: get(ran.parent.parent)), raised(lambda: get(ran)),
            [r.state for r in (ran.parent.parent, ran.parent, ran)],
            raised(lambda: get(linked)))


def settings_are_read_as_celery_reads_them(c, get):
    """Inherited attributes count, and a proxy's (Django's settings are one); a
    config_source sits under changes."""
    class Base:
        task_default_queue = "from_base"

    class Settings(Base):
        task_default_priority = 3

    class Proxy:  # as Django's LazySettings: names from __dir__, values from __getattr__
        def __dir__(self):
            return ["CELERY_TASK_TIME_LIMIT", "SECRET_KEY"]

        def __getattr__(self, name):
            if name not in self.__dir__():
                raise AttributeError(name)
            return {"CELERY_TASK_TIME_LIMIT": 30, "SECRET_KEY": "x"}[name]

    one, two = (c.Celery(name, set_as_current=False) for name in ("one", "two"))
    three = c.Celery("three", set_as_current=False, config_source=Settings,
                     changes={"task_default_priority": 5})
    one.config_from_object(Settings)
    two.config_from_object(Proxy(), namespace="CELERY")
    return ((one.conf.task_default_queue, one.conf.task_default_priority),
            two.conf.task_time_limit,
            (three.conf.task_default_queue, three.conf.task_default_priority),
            three.conf.result_expires.total_seconds())  # a timedelta by default


def a_namespaced_app_reads_django_time_zone_and_its_own_names(c, get):
    """Celery's conf.timezone falls back to TIME_ZONE, Django's setting, even under a
    namespace (crontabs and date_done follow it); code may set the namespace's names."""
    class Settings:
        TIME_ZONE = "America/New_York"

    django, plain = (c.Celery(name, set_as_current=False) for name in ("django", "plain"))
    django.config_from_object(Settings, namespace="CELERY")
    django.conf.update(CELERY_TASK_DEFAULT_QUEUE="other")  # a namespace's name, by code
    django.conf.CELERY_TASK_TIME_LIMIT = 99
    return (django.conf.timezone, plain.conf.timezone, django.conf.task_default_queue,
            django.conf.task_time_limit)


def config_objects_are_taken_whole_and_the_last_one_counts(c, get):
    """Only Celery 3's own names are old names; every other key stays readable through
    conf.get(); a namespace's settings may also use their own names; a second object
    replaces the first."""
    class Project:
        CELERY_TASK_DEFAULT_QUEUE = "namespaced"
        task_acks_late = True
        SENTRY_DSN = "dsn"

    plain, spaced, twice = (c.Celery(name, set_as_current=False) for name in "pst")
    plain.config_from_object({"CELERY_TASK_ALWAYS_EAGER": True, "SENTRY_DSN": "dsn"})
    spaced.config_from_object(Project, namespace="CELERY")
    twice.config_from_object({"task_default_queue": "first", "task_acks_late": True})
    twice.config_from_object({"task_default_queue": "second"})
    return ((plain.conf.task_always_eager, plain.conf.get("SENTRY_DSN")),
            (spaced.conf.task_default_queue, spaced.conf.task_acks_late,
             spaced.conf.get("SENTRY_DSN")),
            (twice.conf.task_default_queue, twice.conf.task_acks_late))


class DottedSettings:  # config_from_object("tests.test_celery_compat.DottedSettings")
    task_default_queue = "dotted"


def settings_by_a_lowercase_namespace_a_dotted_name_and_celerys_defaults(c, get):
    """A namespace's names are in its case; a dotted name may end at a module's
    attribute; settings miniq takes and does not use read as Celery's defaults."""
    class Lower:
        celery_task_always_eager, celery_task_default_queue = True, "lowq"
        celery_worker_concurrency = 7
        CELERY_TASK_DEFAULT_PRIORITY = 9  # not this namespace's case: not read

    lower, dotted = (c.Celery(name, set_as_current=False) for name in ("lower", "dotted"))
    lower.config_from_object(Lower, namespace="celery")
    dotted.config_from_object(f"{__name__}.DottedSettings")
    conf = dotted.conf
    del dotted.timezone  # Celery's idiom to read the setting again
    return ((lower.conf.task_always_eager, lower.conf.task_default_queue,
             lower.conf.worker_concurrency, lower.conf.task_default_priority),
            conf.task_default_queue, str(dotted.timezone),
            (conf.broker_transport_options, conf.task_publish_retry, conf.broker_pool_limit,
             conf.worker_send_task_events, conf["task_default_exchange"]))


def a_max_retries_given_to_retry_holds_for_autoretry_too(c, get):
    """Celery's #6436: retry(max_retries=0) raises its exc, which autoretry_for catches
    and retries with that limit, not the task's; a retry returned eagerly runs again."""
    eager = c.Celery("eager", set_as_current=False, task_always_eager=True)
    runs = []

    @eager.task(bind=True, max_retries=10, autoretry_for=(Exception,), default_retry_delay=0)
    def limited(self):
        runs.append(self.request.retries)
        if self.request.retries == 2:
            self.retry(exc=ValueError("stop"), max_retries=0, countdown=0)
        self.retry(exc=KeyError("again"), countdown=0)

    @eager.task(bind=True, max_retries=3)
    def returned(self):
        if self.request.retries >= 3:
            return 42
        return self.retry(exc=ValueError("x"), throw=False, countdown=0)
    failed = limited.apply()
    return (list(runs), failed.state, repr(failed.result), returned.apply().get())


def eager_propagation_raises_a_retry(c, get):
    eager = c.Celery("eager", set_as_current=False, task_always_eager=True,
                     task_eager_propagates=True)

    @eager.task(bind=True, max_retries=2)
    def again(self, x):
        raise self.retry(countdown=5, exc=ValueError("x"))

    @eager.task(bind=True)
    def flows(self):  # none given: None, not an empty list
        return self.request.callbacks, self.request.errbacks
    try:
        again.delay(7)
    except c._exceptions.Retry as exc:  # as Celery's: it carries the retry's signature
        return (type(exc.exc).__name__, float(exc.when), exc.is_eager, list(exc.sig.args),
                list(flows.delay().get()))


def eager_runs_log_what_celerys_tracer_logs(c, get):
    """On celery.app.trace, where a test's caplog sees them: success, a failure (with its
    exception attached), an expected one, a retry."""
    eager = c.Celery("eager", set_as_current=False, task_always_eager=True)
    logged = []

    class Kept(logging.Handler):
        def emit(self, record):
            text = re.sub(r"in [\d.e-]+s:", "in Ts:", record.getMessage())
            logged.append((record.levelname, re.sub(r"\[[\w-]+\]", "[id]", text),
                           record.exc_info is not None))

    @eager.task(name="ok")
    def ok():
        return "ok"

    @eager.task(name="boom")
    def boom():
        raise ValueError("boom")

    @eager.task(name="thrown", throws=(KeyError,))
    def thrown():
        raise KeyError("k")

    @eager.task(name="again", bind=True)
    def again(self):
        if not self.request.retries:
            raise self.retry(countdown=1, exc=KeyError("k"))
    trace, kept = logging.getLogger("celery.app.trace"), Kept()
    trace.addHandler(kept)
    level = trace.level
    trace.setLevel(logging.INFO)  # (setLevel: a logger caches what it would log)
    try:
        for task in (ok, boom, thrown, again):
            task.delay()
    finally:
        trace.removeHandler(kept)
        trace.setLevel(level)
    return logged


def an_ignored_step_ends_an_eager_chain(c, get):
    eager = c.Celery("eager", set_as_current=False, task_always_eager=True)
    ran = []

    @eager.task(name="stop")
    def stop():
        raise c.Ignore()

    @eager.task(name="note")
    def note(x):
        ran.append(x)
    return c.chain(stop.si(), note.s()).delay().state, ran


def eager_runs_give_what_celerys_tests_see(c, get):
    """A hook's error reaches the caller; an eager group's id is its task_id; a revoke
    leaves eager values; the request says the task's ignore_result; EagerResult is
    built in Celery's order; crossed time limits are refused eagerly too;
    MaxRetriesExceededError keeps the arguments."""
    eager = c.Celery("eager", set_as_current=False, task_always_eager=True,
                     broker=c.app.conf.broker_url)  # a revoke reaches the workers

    class Hooked(eager.Task):
        def on_success(self, retval, task_id, args, kwargs):
            raise RuntimeError("on_success bug")

    @eager.task(name="note")
    def note(x):
        return x

    @eager.task(name="hooked", base=Hooked)
    def hooked():
        return 1

    @eager.task(name="crossed", soft_time_limit=10, time_limit=5)
    def crossed():
        return 1

    @eager.task(name="quiet", bind=True, ignore_result=True)
    def quiet(self):
        return self.request.ignore_result

    @eager.task(name="tired", bind=True, max_retries=0)
    def tired(self, x):
        raise self.retry(countdown=1)
    grouped = c.group(note.s(1), note.s(2)).apply_async(task_id="gid-1")
    grouped.revoke()
    EagerResult = importlib.import_module(c.impl.__name__ + ".result").EagerResult
    made = EagerResult("made", 5, "SUCCESS")
    out_of_retries = tired.apply((7,)).result
    by_position = note.apply((3,), None, None, None, "by-position")  # link, link_error, id
    return (raised(hooked.delay), grouped.id, grouped.get(),
            quiet.delay().get(), (made.state, made.get()), raised(crossed.delay),
            (out_of_retries.task_args, out_of_retries.task_kwargs), by_position.id)


def an_eager_result_made_by_hand_gives_celerys_answers(c, get):
    EagerResult = importlib.import_module(c.impl.__name__ + ".result").EagerResult
    return (raised(EagerResult("a", "oops", "FAILURE").get),
            EagerResult("b", "oops", "FAILURE").get(propagate=False),
            EagerResult("c", {"step": 1}, "PROGRESS").get(),
            raised(EagerResult("d", KeyError("k"), "REVOKED").get))


def retries_count_whole_seconds_and_name_their_arguments(c, get):
    """A backoff's cap is whole seconds; a retry out of retries names the arguments it
    would have run with."""
    eager = c.Celery("eager", set_as_current=False, task_always_eager=True)

    @eager.task(autoretry_for=(KeyError,), retry_backoff=1, retry_backoff_max=1.9,
                retry_jitter=False)
    def backs_off():
        raise KeyError("k")

    @eager.task(bind=True, max_retries=0)
    def out_of_retries(self, x):
        raise self.retry(args=(9,))
    try:
        backs_off.apply(retries=1, throw=True)
    except c._exceptions.Retry as exc:
        waited = float(exc.when)
    error = out_of_retries.apply((1,)).result
    return waited, str(error).split("] ")[1], error.task_args


def eager_propagation_calls_no_failure_hook(c, get):
    """Under task_eager_propagates a failure reaches the caller before any failure hook
    or task_failure; task_postrun still comes, with no state."""
    eager = c.Celery("eager", set_as_current=False, task_always_eager=True,
                     task_eager_propagates=True)
    seen = []

    class Noted(eager.Task):
        def on_failure(self, exc, task_id, args, kwargs, einfo):
            seen.append("on_failure")

        def after_return(self, status, retval, task_id, args, kwargs, einfo):
            seen.append("after_return")

    @eager.task(name="fails", base=Noted)
    def fails():
        raise ValueError("no")

    def failure(sender=None, **kwargs):
        seen.append("task_failure")

    def postrun(sender=None, state=None, **kwargs):
        seen.append(("task_postrun", state))
    c.signals.task_failure.connect(failure, sender=fails)
    c.signals.task_postrun.connect(postrun, sender=fails)
    try:
        return raised(fails.delay), seen
    finally:
        c.signals.task_failure.disconnect(failure, sender=fails)
        c.signals.task_postrun.disconnect(postrun, sender=fails)


def retries_while_waiting_to_retry(c, get):
    """RETRY keeps the count of the run that asked for it, as Celery's meta does."""
    result = c.retry_in_2s.delay()
    deadline = time.monotonic() + T
    while result.state != "RETRY" and not result.ready():
        if time.monotonic() > deadline:
            raise NoAnswer(f"no RETRY state in {T} s")
        time.sleep(0.02)
    waiting = result.retries
    return waiting, get(result), result.retries


def a_chords_callback_is_sent_by_its_last_member(c, get):
    ran = c.chord([c.lineage.s(), c.lineage.s()], c.lineage.s())()
    seen, members = get(ran), {m.id: m for m in ran.parent.results}
    inner = c.chain(c.add.s(1, 1), c.chord([c.lineage.s(), c.lineage.s()], c.lineage.s()))()
    deep = get(inner)
    unfit = c.chord([c.add.s(1, 1)], c.add.s()).delay()  # add([2]): y is missing
    return (raised(lambda: get(unfit)), seen["group"] == ran.parent.id, seen["parent_id"] in members,
            seen["root_id"] == seen["parent_id"],  # the member that ended last: either
            [type(r).__name__ for r in members[seen["parent_id"]].children or []],
            deep["group"] == inner.parent.id,
            deep["parent_id"] in [m.id for m in inner.parent.results],
            deep["root_id"] == inner.parent.parent.id)


def ignore_result_gets_none_at_once(c, get):
    started = time.monotonic()
    values = [c.fire_and_forget.delay(1).get(timeout=T),
              c.echo.apply_async((2,), ignore_result=True).get(timeout=T)]
    return values, time.monotonic() - started < 5


def a_senders_ignore_result_is_over_the_tasks_own(c, get):
    """As Celery's worker: a call's ignore_result=False keeps the result of a task that
    ignores it; send_task, unless told, leaves it to the task's own (5.6 kept it)."""
    callbacks = [str(uuid.uuid4()) for _ in range(2)]
    sent = [c.app.send_task(c.calls_back_later.name, (callbacks[0],)),
            c.calls_back_later.apply_async((callbacks[1],), ignore_result=False)]
    values = [get(c.app.AsyncResult(callback)) for callback in callbacks]
    return values, [result.state for result in sent]  # each settled as its callback was sent


def on_message_sees_progress_then_success(c, get):
    gate = os.path.join(tempfile.mkdtemp(), "gate")
    seen = []

    def on_message(meta):
        # Celery's may also see other tasks' messages; miniq always records STARTED, Celery
        # only with track_started.
        if meta["task_id"] != result.id or meta["status"] == "STARTED":
            return
        seen.append((meta["status"], meta["result"]))
        if meta["status"] == "PROGRESS":
            open(gate, "w").close()

    result = c.progress_gated.delay(gate)
    try:
        value = result.get(timeout=T, on_message=on_message)
    except c.TimeoutError as exc:
        raise NoAnswer(f"no result in {T} s") from exc
    return value, seen


def get_takes_celerys_keywords_and_no_others(c, get):
    """on_message hears of changes from the call on (none for a finished task);
    on_interval runs while get() waits; a ResultSet keeps the list it is given; a
    keyword Celery's get() lacks is a TypeError."""
    done = c.add.delay(1, 1)
    get(done)
    heard = []
    done.get(timeout=T, on_message=heard.append)
    members = [done]
    together = c._result.ResultSet(members)
    members.append(c.add.delay(2, 2))
    gate = os.path.join(tempfile.mkdtemp(), "gate")
    gated = c.progress_gated.delay(gate)
    opened = raised(lambda: gated.get(timeout=10, interval=0.1,
                                      on_interval=lambda: open(gate, "w").close()))
    stopped = c.chord([c.fail.si(), c.add.si(1, 1)], c.tsum.s()).delay()
    return (heard, together.join(timeout=T), opened,
            raised(lambda: done.get(timeout=T, bogus=1)),
            raised(lambda: together.join(timeout=T, follow_parents=False)),
            raised(lambda: stopped.get(timeout=T, follow_parents=False)))  # its own error


SCENARIOS = [
    (delay_and_get, 5),
    (an_ignored_result_goes_on_but_is_not_kept, (6, "PENDING", True, "PENDING", 101)),
    (an_unknown_task_name_is_celerys_not_registered, [(
        "NotRegistered", ("no.such.task",), "'no.such.task'",
        "Task of kind 'no.such.task' never registered, please make sure it's imported.")] * 2),
    (revoke_with_reply_answers_for_each_worker,
     (None, [(True, "tasks {'<id>'} flagged as revoked")], ["tasks set() flagged as revoked"])),
    (the_children_of_a_chords_sender_are_its_header, ([[("GroupResult", [2, 4])]] * 4, [2])),
    (a_chords_keyword_arguments_go_to_its_members,
     ([[[[[1], {"k": 5}], [[2], {"k": 5}]]], {}],  # the body: [its members' values]
      [[[[[9, 7, 1], {"own": 1, "k": 5}]]], {}])),
    (bind_sees_its_request_id, True),
    (retry_runs_again, 2),
    (a_retry_without_exc_stores_no_exception, (None, "again")),
    (retry_gives_up_after_max_retries, ("raised MaxRetriesExceededError",
                                         "gave up after 1: (1,) kwargs:{'b': 3}")),
    (soft_limit_is_caught_by_the_task, "cleaned up"),
    (hard_limit_raises_time_limit_exceeded, ("TimeLimitExceeded", (1,))),
    (failure_comes_back_as_its_type, "ValueError"),
    (an_exchange_or_a_routing_key_alone_goes_to_the_default_queue, [3, 4]),
    (soft_limit_above_hard_limit_is_refused, "raised ValueError"),
    (chain_passes_results_on, 10),
    (group_collects_results_in_order, [0, 2, 4, 6]),
    (own_exception_class_is_caught_around_get, "CompatError"),
    (signature_options_and_forget_behave_as_celerys, (1, 2, "PENDING", "PENDING", "PENDING", [],
                                                      "kept")),
    (exceptions_keep_their_class_and_args, (["SeveralArgs", [1, "two", "{3}"], "FAILURE"],
                                            ["BaseFault", ["base"], "FAILURE"], 2)),
    (errors_stand_under_celerys_bases,
     {"ImproperlyConfigured": ["CeleryError"], "OperationalError": [],
      "TimeoutError": ["CeleryError", "TaskError"],
      "IncompleteStream": ["CeleryError", "TaskError"],
      "NotRegistered": ["CeleryError", "TaskError", "KeyError"],
      "QueueNotFound": ["CeleryError", "TaskError", "KeyError"],
      "InvalidTaskError": ["CeleryError", "TaskError"],
      "MaxRetriesExceededError": ["CeleryError", "TaskError"],
      "TaskRevokedError": ["CeleryError", "TaskError"], "ChordError": ["CeleryError", "TaskError"],
      "WorkerLostError": [], "SoftTimeLimitExceeded": [], "TimeLimitExceeded": [],
      "Retry": ["CeleryError", "TaskPredicate"], "Ignore": ["CeleryError", "TaskPredicate"],
      "Reject": ["CeleryError", "TaskPredicate"]}),
    (canvas_forms_that_celery_takes,
     (8, None, True, 5, ["ImproperlyConfigured", "Cannot replace with an empty chain"],
      ([4, 5], [[42]]))),
    (a_failed_header_fails_a_group_body_with_its_error, ("ValueError", "as expected")),
    (tasks_themselves_stand_for_their_signatures_in_a_chords_header,
     f"{MODULE}.current_name"),
    (a_failed_header_fails_a_group_body_with_a_projects_own_error, ("CompatError", "own class")),
    (an_exception_not_made_again_comes_back_as_celerys,
     [["UnpickleableExceptionWrapper", "NeedsTwo('foo')"], ["Fault", "foo"]]),
    (an_exception_that_does_not_pickle_comes_back_as_celery_hands_it_on,
     [["KeyError", "'local'"]] * 2 + [["UnpickleableExceptionWrapper",
                                       "ValueError(<unlocked _thread.lock"]] * 2),
    (hooks_of_a_base_class_run_around_each_run, (
        ["before_start", "on_success fine", "after_return SUCCESS"],
        ["before_start", "on_failure CompatError as planned True", "after_return FAILURE"],
        ["before_start", "on_retry KeyError('again')",  # as Celery: no after_return
         "before_start", "on_success fine", "after_return SUCCESS"])),
    (a_hard_time_limit_calls_the_failure_hooks, (
        ["before_start", "on_failure TimeLimitExceeded TimeLimitExceeded(1,) True",
         "after_return FAILURE"], "fine")),
    (hooks_after_a_hard_limit_find_the_failure_stored, [
        "on_failure FAILURE TimeLimitExceeded(1)", "after_return FAILURE TimeLimitExceeded(1)"]),
    (the_current_task_and_uuid, ([True, True, True, True], False, [True, True],
                                 f"{MODULE}.current_name", f"{MODULE}.current_name")),
    (a_missing_argument_fails_at_the_call, "raised TypeError"),
    (inspect_answers_for_each_worker, ([{"ok": "pong"}], [True], [2], True)),
    (time_options_and_the_apps_clock_as_celerys, (
        True, False, None, True, True, timedelta(0), True)),
    (an_abortable_task_stops_when_asked, ("AbortableAsyncResult", (False, False), "aborted")),
    (a_shadow_name_is_the_requests, (f"{MODULE}.shadowed:x", "given", True)),
    (settings_left_unset_read_as_celerys, [
        True, "WARNING", True, "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s",
        False, "json", ("json",), "direct", False, None]),
    (task_classes_as_celery_makes_them, (
        [3, True, 1], ["the function", "compat"], ["the function", "compat"],
        ("given", "given"), None, 0, 2, None, True)),
    (a_base_with_its_own_init, [
        "opened once for tests.compat.celery_api.opened by its own option", "opened"]),
    (ignore_after_storing_the_result_by_hand, {"by": "hand"}),
    (reject_without_requeue_fails, ("raised Reject", "FAILURE")),
    (dont_autoretry_for_is_not_retried, "'try 0'"),
    (rate_limits_space_the_starts, [True, True]),
    (task_signals_run_around_each_run, (
        ["prerun True True [3]", "success 6", "postrun SUCCESS 6"],
        ["prerun True True [4]", "failure CompatError as planned True",
         "postrun FAILURE CompatError('as planned')"])),
    (a_sigusr1_is_a_soft_time_limit_in_the_task, (
        "cleaned up after SoftTimeLimitExceeded()", "SUCCESS", [
            "prerun True True []", "revoked True True False",
            "success cleaned up after SoftTimeLimitExceeded()",
            "postrun SUCCESS 'cleaned up after SoftTimeLimitExceeded()'"])),
    (terminate_with_a_signal_the_task_handles, [
        ("cleaned", "SUCCESS", ["prerun True True []", "revoked True True False",
                                "success cleaned", "postrun SUCCESS 'cleaned'"]),
        ("raised CompatError", "FAILURE", [
            "prerun True True []", "revoked True True False",
            "failure CompatError got the signal True",
            "postrun FAILURE CompatError('got the signal')"])]),
    (request_fields_of_a_plain_call, (
        True, {"exchange": "", "routing_key": "celery", "priority": 0, "redelivered": False},
        True, None, None, None, None, [None, None], None, True, False, None, True)),
    (chord_fields_of_a_plain_call, ([None, None], [None, None], [None, None], [None, None])),
    (request_fields_of_a_call_with_options, (
        timedelta(0), True, 3, [20, 10], {"x_note": 1}, 1, {"trace": "t"}, 2)),
    (how_a_run_shows_its_call, (["(1, 'a')", "{'k': 2}", "py", None],
                                ["(<hidden>,)", "{}", "py", None])),
    (parent_and_root_of_a_task_sent_by_a_task, (True, True)),
    (a_run_lists_the_tasks_it_sent_as_its_childrens_results,
     [["AsyncResult", "AsyncResult"], True]),
    (a_chain_step_sees_the_steps_after_it, (
        ["chain_view", "add"], [], None, None, None, ["echo"], ["echo"])),
    (group_members_know_their_group, [True, True]),
    (a_chain_in_a_group_runs_as_a_chain, (2, [4, 6], [12, 6], [12, 6])),
    (immutable_signatures_ignore_the_previous_result, [30, 30, 30]),
    (an_empty_chord_runs_its_body_at_once, []),
    (workflows_print_as_calls, (
        "tests.compat.celery_api.add(2, y=2)", "tests.compat.celery_api.add(2, 2)",
        "tests.compat.celery_api.add(4, 4) | add(8) | echo()",
        "group((tests.compat.celery_api.add(1, 1) | echo(), tests.compat.celery_api.add(3, 3)))",
        "group([tests.compat.celery_api.add(1, 1)])", "group(<empty>)",
        "%tests.compat.celery_api.echo([add(1, 1), add(2, 2)])",
        "%tests.compat.celery_api.add([], 5)",
        "[tests.compat.celery_api.add(x) for x in [1, 2]]",
        "[tests.compat.celery_api.add(*x) for x in [(1, 2)]]",
        "<@task: tests.compat.celery_api.add of compat at ID>")),
    # Canvas (issue 12)
    (calling_a_signature_runs_it_here, (4, "ab", "ab", 4)),
    (calling_a_workflow_sends_it, [
        ("AsyncResult", 16), ("AsyncResult", 16), ("GroupResult", list(range(0, 20, 2))),
        ("AsyncResult", 90), ("AsyncResult", 9900)]),
    (partial_workflows_take_the_missing_arguments, (
        list(range(10, 20)), 160, 64, 352, "abc", ["ax", "ay"])),
    (an_immutable_chain_keeps_each_result, (16, 8, 4)),
    (a_group_piped_into_a_task_is_a_chord, (True, 90, 7, 4)),
    (a_task_piped_into_a_group_gives_the_group_result, (
        "GroupResult", list(range(0, 20, 2)), 8, [5, 6], [14, 14])),
    (a_group_inside_a_chain_is_a_chord_with_the_rest, ([42, 42], 22, 6, 11, [6, 6])),
    (composed_workflows_print_as_celery_prints_them, (
        "tests.compat.celery_api.add(2, 2) | %add((add(1), add(2)), 1)",
        "tests.compat.celery_api.add(2, 2) | add(1) | add(1)",
        "%tests.compat.celery_api.tsum((add(1, 1), add(2, 2)))")),
    (groups_of_groups_are_flattened, ([11, 101, 1001, 2001], [42, 42], [42, 42], [[42, 42]])),
    (chords_in_chains_and_chains_in_chords, [
        16, 12, 12, [1, 6], 7, [[42]], [[3, 7, 5], [13, 10]], [[[[3, 3], 4], 5], 6]]),
    (chord_bodies_that_are_chains_or_groups, ("AsyncResult", 16, "GroupResult", [6, [2, 4]],
                                              [2, 4], "raised ValueError")),
    (link_calls_back_with_the_result, (4, ["4"], ["'fixed'", "6"], ["10", "20"], 4, ["4"],
                                       ["4", "6"])),
    (errbacks_get_celerys_arguments, [  # new style: (request, exc, traceback text)
        ("raised ValueError", ["new <this> ValueError as expected str"]),
        ("raised ValueError", ["old <this>"]),  # old style: the failed task's id
        ("raised ValueError", ["new <this> ValueError as expected str", "old <this>"]),
        ("raised ValueError", ["new <this> ValueError as expected str"]),
        ("raised ValueError", ["'fixed'"])]),  # immutable: its own arguments only
    (an_eager_chain_gives_each_step_the_calls_options, (
        4, "cid", ["4"], [12, 22], ["12", "22"], 7, 7, "raised ValueError", 1, 3, 4, 4,
        [3],
        "tests.compat.celery_api.add(1, 2)")),
    (a_chords_countdown_delays_its_header_alone, (False, False, [True])),
    (on_replace_and_trail_as_celerys, (101, [], [], True)),
    (ignored_tasks_read_pending_as_they_run, [["PENDING"]] * 3),
    (an_eager_run_calls_its_links,
     ("FAILURE", ["new <this> ValueError as expected str", "old <this>"], 5, ["5"])),
    (errbacks_of_a_chord_body_run_when_a_member_fails, [  # <this>: the chord body's id
        ("raised ValueError", "FAILURE", "ChordError", [
            "Dependency <other> raised ValueError('as expected')",
            "new <this> ChordError Dependency <other> raised ValueError('as expected') NoneType"]),
        ("raised ValueError", "FAILURE", "ChordError", [
            "Dependency <other> raised ValueError('as expected')", "old <this>"]),
        ("raised ValueError", "FAILURE", "ChordError", [
            "Dependency <other> raised ValueError('as expected')",
            "new <this> ChordError Dependency <other> raised ValueError('as expected') NoneType"])]),
    (a_chord_member_revoked_before_it_was_sent_fails_the_chord, [
        ("FAILURE", ["Dependency <other> raised TaskRevokedError('revoked')"],
         ["Dependency <other> raised TaskRevokedError('revoked')"])] * 2),
    (a_group_after_a_group_in_a_chain_follows_its_results, [
        ("GroupResult", [[[[3, 4]], {}]] * 2), ("GroupResult", [3, 4]), ("AsyncResult", 2)]),
    (errbacks_count_only_the_arguments_left_free, (
        ["old <this> extra"], ["(True, 'celery', True, None, 1, None)"], True,
        "raised ValueError", 2)),
    (a_chords_call_options_link_its_callback_only,  # not each member: Celery clones the body
     (6, ["6"], "raised ValueError", ["old <this>"])),
    (get_of_a_chain_stopped_by_a_revoked_step_raises,  # not a wait for a step never sent
     ("raised TaskRevokedError", "REVOKED", "PENDING")),
    (a_groups_call_refuses_link_and_link_error, ("raised TypeError", "raised TypeError")),
    (the_retries_option_is_the_requests_count, ([2, None], [3, None])),  # not its own parent
    (several_links_are_one_group, (["GroupResult"], [14, 21])),
    (map_starmap_and_chunks, ([45, 4950], list(range(0, 20, 2)), "GroupResult",
                              [[0, 2, 4, 6, 8], [10, 12, 14, 16, 18]],
                              [[0, 2, 4, 6, 8], [10, 12, 14, 16, 18]], True,
                              [[0, 2, 4, 6, 8], [10, 12, 14, 16, 18]])),
    (replace_gives_the_replacement_result, [
        5, 32, [11, 12], [12, 13, 14, 15], 20, [[3, 7, 5, "A"], [13, 10, "A"]]]),
    (update_state_stores_any_tasks_state, True),
    (a_result_returned_is_stored_as_its_ids, (None, None, 2, None, [(4, None, None),
                                                                      (6, None, None)], True)),
    (task_options_default_as_celerys, (
        [False, None, False, False, 3, 180, None, None, None, None, None, False],
        None, False, None)),
    (no_exception_stored_reads_as_none,
     ["REVOKED", None, None, "raised RuntimeError"] * 2),
    (an_exception_stored_by_update_state_is_raised,
     ("raised KeyError", "FAILURE", "REVOKED", "ValueError('by caller')", None, None, None)),
    (a_replacement_that_fails_fails_its_chord, ("raised ValueError", "raised ValueError",
                                                "raised ChordError", "ValueError('as expected')",
                                                "raised ChordError")),
    (signature_replace_group_skew_and_app_signature, (
        (5,), {"countdown": 3}, (2,), [0.0, 0.1, 0.2], 3, [0, 2, 4], ["0.0", "2.0", "4.0"])),
    (signatures_are_data, ((2, 2), {"debug": True}, {"countdown": 10},
                           "tests.compat.celery_api.add", False, True, True, 4,
                           [(True, "tests.compat.celery_api.add", [2], {"y": 3},
                             {"countdown": 0.1}, 5)] * 3, None)),
    (a_signature_argument_is_rebuilt_and_sent_in_a_task, (
        [4, 12, 10], ["dict", "tests.compat.celery_api.add", [2], {"y": 3}, False])),
    (typed_values_travel_as_themselves, repr([
        datetime(2030, 1, 2, 3, 4, 5, 6), datetime(2030, 1, 2, tzinfo=timezone.utc),
        date(2030, 1, 2), dtime(3, 4, 5), uuid.UUID(int=7), Decimal("1.10"), b"bytes"])),
    (a_type_json_cannot_carry_fails_at_the_call, True),
    (signature_options_and_a_single_link, ({"priority": 4}, 4, ["list", "list"])),
    (workflows_check_arguments_at_the_call, ["raised TypeError"] * 4),
    (eager_results_name_their_task_and_priority, (
        "tests.compat.celery_api.add",
        {"is_eager": True, "exchange": None, "routing_key": None, "priority": 3})),
    (a_step_that_cannot_take_the_result_fails_the_chain, (
        "raised TypeError", "raised TypeError", ["FAILURE"] * 3, "raised TypeError")),
    (settings_are_read_as_celery_reads_them, (("from_base", 3), 30, ("from_base", 5), 86400)),
    (a_namespaced_app_reads_django_time_zone_and_its_own_names, ("America/New_York", None, "other", 99)),
    (config_objects_are_taken_whole_and_the_last_one_counts, (
        (False, "dsn"), ("namespaced", True, "dsn"), ("second", False))),
    (eager_propagation_raises_a_retry, ("ValueError", 5.0, True, [7], [None, None])),
    (settings_by_a_lowercase_namespace_a_dotted_name_and_celerys_defaults, (
        (True, "lowq", 7, None), "dotted", "UTC", ({}, True, 10, False, None))),
    (a_max_retries_given_to_retry_holds_for_autoretry_too, (
        [0, 1, 2], "FAILURE", "ValueError('stop')", 42)),
    (an_ignored_step_ends_an_eager_chain, ("IGNORED", [])),
    (eager_runs_log_what_celerys_tracer_logs, [
        ("INFO", "Task ok[id] succeeded in Ts: 'ok'", False),
        ("ERROR", "Task boom[id] raised unexpected: ValueError('boom')", True),
        ("INFO", "Task thrown[id] raised expected: KeyError('k')", False),
        ("INFO", "Task again[id] retry: Retry in Ts: KeyError('k')", False),
        ("INFO", "Task again[id] succeeded in Ts: None", False)]),
    (eager_runs_give_what_celerys_tests_see, (
        "raised RuntimeError", "gid-1", [1, 2], True, ("SUCCESS", 5),
        "raised ValueError", ((7,), {}), "by-position")),
    (an_eager_result_made_by_hand_gives_celerys_answers, (
        "raised Exception", "oops", None, "raised KeyError")),
    (retries_count_whole_seconds_and_name_their_arguments, (1.0, "args:(9,) kwargs:{}", (9,))),
    (eager_propagation_calls_no_failure_hook, ("raised ValueError", [("task_postrun", None)])),
    (retries_while_waiting_to_retry, (0, ["again", True], 1)),
    (a_chords_callback_is_sent_by_its_last_member, (
        "raised ChordError", True, True, True, [], True, True, True)),
    (ignore_result_gets_none_at_once, ([None, None], True)),
    (a_senders_ignore_result_is_over_the_tasks_own, ([101, 101], ["PENDING", "SUCCESS"])),
    (a_step_sent_again_runs_again, [103, 105]),
    (canvas_objects_as_celery_builds_them, [
        2, 2, False, [True, True], True, 2, 1, [1, 2], True, None, 1, [2, 4], 2]),
    (an_empty_group_in_a_chain_is_skipped, (7, 4)),
    (a_chords_members_may_be_set_anew, (2, 10)),
    (the_current_task_is_where_celerys_state_module_keeps_it,
     ([f"{MODULE}.found_in_state"] * 2 + [True],
      [f"{MODULE}.found_in_state", f"{MODULE}.calls_found_in_state", True], None)),
    (a_retry_from_on_failure_runs_the_task_again, "run 1"),
    (get_raises_a_failed_parents_error_though_its_own_task_is_done,
     ("raised KeyError", 84)),
    (piping_what_is_no_signature_is_a_type_error_and_clones_equal,
     ([True] * 9, [True, True], True, True)),
    (tasks_are_registered_as_celery_registers_them, (
        5, 5, "raised NotRegistered", 8, ["session", 5])),
    (send_task_takes_countdown_eta_and_id_by_position, ("PENDING", True, 4)),
    (a_chords_callback_that_never_ran_sends_no_signal, ("raised ValueError", "FAILURE", False)),
    (callbacks_given_to_a_chain_stay_with_its_steps, (
        "raised ValueError", "raised ValueError", 12, 1, 1, ["12"])),
    (a_retrys_arguments_merge_with_the_calls, (
        [11, 2, [11], {"y": 2}], [1, 5, [1, 5], {}])),
    (a_replacement_runs_as_the_task_itself, (
        True, [], "raised ValueError", True, True, "raised TaskRevokedError", "REVOKED")),
    (chord_headers_replacements_and_keys_as_celerys, (
        22, "ChordError", [("parent_id", "parent"), ("root_id", "root"), ("task_id", "mine")],
        True, 1, [[4, 5]])),
    (autodiscovery_skips_a_path_that_is_no_package, ([], "nonexistent")),
    (get_takes_celerys_keywords_and_no_others, (
        [], [2, 4], "done", "raised TypeError", "raised TypeError", "raised ChordError")),
    (on_message_sees_progress_then_success, (
        "done", [("PROGRESS", {"step": 1}), ("SUCCESS", "done")])),
]


# Celery's behaviour that changed in a release: the Celery pip gives an older Python
# (5.6 on 3.9) is not asked for it, else its worker waits out the scenario.
SINCE = {reject_without_requeue_fails: (5, 7),  # 5.6 stores no state for such a Reject
         a_senders_ignore_result_is_over_the_tasks_own: (5, 7),
         # 5.6 counts a partial argument of an errback, and calls it with (request, ...)
         errbacks_count_only_the_arguments_left_free: (5, 7),
         rate_limits_space_the_starts: (5, 7),  # with kombu 5.6, the first starts are not spaced
         # 5.6 hands the call's link to the header's group too, which refuses it
         a_chords_call_options_link_its_callback_only: (5, 7),
         # 5.6's callback of a chord inside a chain names another parent
         a_chords_callback_is_sent_by_its_last_member: (5, 7),
         exceptions_keep_their_class_and_args: (5, 7),  # 5.6's child dies of a BaseException
         # 5.6 calls no hook for a run its hard time limit ended
         a_hard_time_limit_calls_the_failure_hooks: (5, 7),
         hooks_after_a_hard_limit_find_the_failure_stored: (5, 7),
         # 5.6 revokes a group body's members after a failed header, then fails them
         a_failed_header_fails_a_group_body_with_its_error: (5, 7),
         a_failed_header_fails_a_group_body_with_a_projects_own_error: (5, 7),
         # 5.6 makes an empty group and the step after it a chord, which gets []
         an_empty_group_in_a_chain_is_skipped: (5, 7),
         # 5.6 sends the call's kwargs with the new args: the retry cannot run
         a_retrys_arguments_merge_with_the_calls: (5, 7),
         callbacks_given_to_a_chain_stay_with_its_steps: (5, 7),  # 5.6: as the one above
         # 5.6's chord never ends when a member replaced by a failing task fails
         a_replacement_that_fails_fails_its_chord: (5, 7),
         an_ignored_step_ends_an_eager_chain: (5, 7),  # 5.6 runs the next step with None
         # 5.6 calls an eager chain's link back with each step's value
         an_eager_chain_gives_each_step_the_calls_options: (5, 7),
         a_chords_countdown_delays_its_header_alone: (5, 7)}  # 5.6 delays the callback too


@pytest.mark.parametrize("scenario, expected", SCENARIOS, ids=[s.__name__ for s, _ in SCENARIOS])
def test_the_same_module_gives_the_same_result(api, scenario, expected):
    skip_before_celerys(api, scenario)
    assert api.run(scenario) == expected, api.impl


def skip_before_celerys(api, scenario):
    if api.impl == "celery" and scenario in SINCE:
        version = importlib.import_module("celery").__version__
        if tuple(int(part) for part in version.split(".")[:2]) < SINCE[scenario]:
            pytest.skip(f"Celery {version} predates this behaviour of Celery {SINCE[scenario]}")


# Results (issue 12)
def result_fields_of_a_finished_task(c, get):
    r = c.add.apply_async((2,), {"y": 3})
    get(r)
    done = r.date_done
    return (r.name, r.args, r.kwargs, r.retries, r.queue,
            r.worker == f"celery@{socket.gethostname()}", done.utcoffset(),
            abs(time.time() - done.timestamp()) < T)


def a_native_join_with_a_callback_gives_none(c, get):
    """As Celery's with Redis, whose get() is its native join; revoke() takes Celery's
    broker knobs."""
    group_result, seen = c.group(c.add.s(1, 1), c.add.s(2, 2)).apply_async(), []
    given = group_result.get(timeout=T, callback=lambda task_id, value: seen.append(value))
    joined = group_result.join(timeout=T, callback=lambda task_id, value: None)
    native = group_result.join_native(timeout=T, callback=lambda task_id, value: None)
    group_result.revoke(connection=None, wait=False, timeout=1)
    group_result.results[0].revoke(connection=None, wait=False, timeout=1)
    return given, joined, native, sorted(seen)


def celerys_backend_cleanup_is_a_task(c, get):
    """Its beat schedules it where results expire; a beat_schedule may name it."""
    return get(c.app.send_task("celery.backend_cleanup")), "celery.backend_cleanup" in c.app.tasks


def collect_walks_what_a_task_sent(c, get):
    root = c.family.delay(1)
    get(root)
    return [(type(node).__name__, value) for node, value in root.collect(timeout=T)]


def iterdeps_and_get_leaf_walk_what_a_task_sent(c, get):
    root = c.family.delay(1)
    list(root.collect(timeout=T))  # all done now
    unknown = c.app.AsyncResult(str(uuid.uuid4()))
    chained = c.chain(c.add.s(1, 1), c.add.s(2))()
    get(chained)
    return ([(type(parent).__name__, type(node).__name__) for parent, node in root.iterdeps()],
            root.get_leaf(), raised(lambda: list(unknown.iterdeps())),
            len(list(unknown.iterdeps(intermediate=True))),
            chained.as_list() == [chained.id, chained.parent.id],
            issubclass(type(chained).TimeoutError, Exception))


def exists_tells_a_stored_state_from_none(c, get):
    done, unknown = c.add.delay(1, 1), c.app.AsyncResult(str(uuid.uuid4()))
    get(done)
    seen = c.app.AsyncResult(done.id)
    stored = seen.successful() and seen.exists()
    done.forget()  # asked each time, as Celery's: not what this handle saw before
    return stored, seen.exists(), unknown.exists()


SINCE[exists_tells_a_stored_state_from_none] = (5, 7)


def a_saved_nested_group_result_restores(c, get):
    inner = c.group(c.add.s(1, 1), c.add.s(2, 2)).apply_async()
    saved = c.GroupResult(str(uuid.uuid4()), [inner, c.add.delay(3, 3)], app=c.app).save()
    back = c.GroupResult.restore(saved.id, app=c.app)
    values = [get(r) for r in back]
    back.delete()
    return (back == saved, [type(r).__name__ for r in back], values,
            c.GroupResult.restore(saved.id, app=c.app))


def result_from_tuple_takes_a_result_or_an_id_alone(c, get):
    results = importlib.import_module(c.impl.__name__ + ".result")
    one, many = c.add.delay(1, 2), c.group(c.add.s(1, 1)).apply_async()
    rebuilt = results.result_from_tuple
    return (rebuilt(one, c.app) is one, rebuilt((one.id, None), c.app).id == one.id,
            get(rebuilt(one.as_tuple(), c.app)), get(rebuilt(many.as_tuple(), c.app)),
            [isinstance(r, results.ResultBase) for r in (one, many)])


def an_apps_result_classes_are_of_that_app(c, get):
    sent = c.group(c.add.s(1, 1), c.add.s(2, 2)).apply_async()
    sent.save()
    back = c.app.GroupResult.restore(sent.id)
    made = c.app.GroupResult(str(uuid.uuid4()), [c.add.delay(3, 3)])
    both = c.app.ResultSet([c.add.delay(4, 4), c.add.delay(5, 5)])
    sent.delete()
    return (back == sent, [get(r) for r in back], isinstance(sent, c.app.GroupResult),
            isinstance(back, c.app.GroupResult), made.get(timeout=T), both.get(timeout=T),
            c.app.GroupResult.restore(sent.id),
            [isinstance(r, c.app.AsyncResult) for r in (made.results[0], back.results[0])],
            issubclass(c.app.AsyncResult.TimeoutError, Exception))


def allow_join_result_lets_a_task_wait(c, get):
    return get(c.join_inside.delay(21))


RESULT_SCENARIOS = [
    (an_apps_result_classes_are_of_that_app, (
        True, [2, 4], True, True, [6], [8, 10], None, [True, True], True)),
    (iterdeps_and_get_leaf_walk_what_a_task_sent, (
        [("NoneType", "AsyncResult"), ("AsyncResult", "AsyncResult"),
         ("AsyncResult", "GroupResult"), ("GroupResult", "AsyncResult"),
         ("GroupResult", "AsyncResult")], 0, "raised IncompleteStream", 1, True, True)),
    (exists_tells_a_stored_state_from_none, (True, False, False)),
    (result_from_tuple_takes_a_result_or_an_id_alone, (True, True, 3, [2], [True, True])),
    (celerys_backend_cleanup_is_a_task, (None, True)),
    (a_native_join_with_a_callback_gives_none, (None, [], None, [2, 4])),
    (result_fields_of_a_finished_task, (
        "tests.compat.celery_api.add", [2], {"y": 3}, 0, "celery", True, timedelta(0), True)),
    (collect_walks_what_a_task_sent, [
        ("AsyncResult", 1), ("AsyncResult", 2), ("GroupResult", [2, 0]), ("AsyncResult", 2),
        ("AsyncResult", 0)]),
    (a_saved_nested_group_result_restores, (
        True, ["GroupResult", "AsyncResult"], [[2, 4], 6], None)),
    (allow_join_result_lets_a_task_wait, 42),
]


@pytest.mark.parametrize("scenario, expected", RESULT_SCENARIOS,
                         ids=[s.__name__ for s, _ in RESULT_SCENARIOS])
def test_result_objects_give_the_same_answers(api, scenario, expected):
    skip_before_celerys(api, scenario)
    assert api.run(scenario) == expected, api.impl
