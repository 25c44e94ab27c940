"""Rate limits: Celery's ``rate_limit`` option, ``task_default_rate_limit`` and
``task_annotations``, kept across every worker on the file (Celery keeps each
worker's limit on its own)."""
import pytest

import miniq.app
from miniq import project
from miniq import Celery, Task
from miniq.broker import SCHEDULED
from miniq.rates import RateBroker as Broker
from miniq.exceptions import ImproperlyConfigured
from miniq.project import rate
from tests import tasks


@pytest.fixture
def fresh_app(tmp_path):
    """A Celery app of its own; the default app of the other tests is kept."""
    saved = miniq.app._default
    made = Celery("fresh", broker=f"sqlite:///{tmp_path / 'fresh.db'}")
    yield made
    miniq.app._default = saved
    project.APPS.discard(made)  # no later shared task is made on it


def test_a_rate_limit_holds_across_two_workers_and_holds_up_no_other_task(app, start_worker):
    workers = [start_worker("-c", "2", ready=False) for _ in range(2)]
    for worker in workers:
        worker.wait_ready()
    paced = [tasks.paced.delay() for _ in range(30)]  # "20/s": 50 ms between starts
    free = tasks.now.delay()
    starts = sorted(result.get(timeout=30) for result in paced)
    # A child begins a little after its worker claimed the task: 0.1 s of slack for that.
    assert starts[-1] - starts[0] >= 29 * 0.05 - 0.1
    in_half_a_second = max(sum(s <= t < s + 0.5 for t in starts) for s in starts)
    assert in_half_a_second <= (0.5 + 0.1) * 20 + 1  # a bucket of one: 10, and one at the edge
    assert sum(s < free.get(timeout=30) for s in starts) <= 10  # not queued behind them
    rows = app.broker.db.execute("SELECT worker, attempts FROM task WHERE name = ?",
                                 (tasks.paced.name,)).fetchall()
    assert len({worker for worker, _ in rows}) == 2  # both workers started some
    assert {attempts for _, attempts in rows} == {1}  # waiting for a turn is no delivery


def test_the_line_is_kept_in_the_file_in_order_and_costs_no_delivery(tmp_path):
    """Two connections, as two workers, with one clock that only the test moves."""
    clock, started = [1000.0], []
    one, two = (Broker(str(tmp_path / "rate.db"), clock=lambda: clock[0]) for _ in range(2))

    def send(i, **options):
        one.enqueue([tasks.app.message_row(tasks.paced.name, task_id=f"t{i}", **options)])

    def step(broker, at):
        clock[0] = at
        claimed = broker.claim("w", ["celery"], 5, 60.0)
        later = broker.book("w", [(m.id, m.attempts, m.name, 0.5) for m in claimed])
        started.extend((at, m.id) for m in claimed if m.id not in later)

    for i in range(5):
        send(i)
    step(one, 1000.0)
    step(two, 1000.0)
    assert started == [(1000.0, "t0")]  # t1 is next, due in 0.5 s; t2 to t4 in line
    rows = "SELECT id, status, eta, attempts FROM task WHERE id != 't0' ORDER BY seq"
    assert one.db.execute(rows).fetchall() == [
        ("t1", SCHEDULED, 1000.5, 0), ("t2", -1, 1000.5, 0), ("t3", -1, 1000.5, 0), ("t4", -1, 1000.5, 0)]
    assert one.purge(["celery"], dry_run=True) == 4  # queued, as far as users can tell
    send(5, priority=9)  # ahead of the older ones in line, as its priority says
    send(6)
    for at in (1000.25, 1000.5, 1000.75, 1001.25, 1001.5):  # t5's turn (1001.0) taken late
        step(one if at % 0.5 else two, at)
    one.revoke(["t2"], None)  # the next one goes: a recovery pass moves the line on
    step(two, 1001.75)
    one.recover([], 3, "{}")
    for at in (1001.75, 1002.0, 1002.25, 1002.5, 1002.75, 1003.0):
        step(one, at)
    send(7)  # the line is empty and the rate allows a start: at once
    step(two, 1003.5)
    assert started == [(1000.0, "t0"), (1000.5, "t1"), (1001.25, "t5"), (1001.75, "t3"),
                       (1002.25, "t4"), (1002.75, "t6"), (1003.5, "t7")]
    assert one.db.execute("SELECT COUNT(*) FROM task WHERE status = 1 AND attempts != 1"
                          ).fetchone()[0] == 0
    for i in (8, 9):
        send(i)
    step(one, 1003.5)
    assert one.db.execute("SELECT COUNT(*) FROM task WHERE status = -1").fetchone()[0] == 1
    one.release([tasks.paced.name])  # a worker whose app has no limit for it starts
    clock[0] = 1004.0  # and claims them both, as it books nothing
    assert {m.id for m in two.claim("w2", ["celery"], 5, 60.0)} == {"t8", "t9"}


@pytest.mark.parametrize("value, per_second", [
    ("10/s", 10), ("120/m", 2), ("7200/h", 2), ("5", 5), (2.5, 2.5), ("0.5/s", 0.5),
    (None, 0), (0, 0), ("", 0), ("0/s", 0)])
def test_rates_read_as_celery_reads_them(value, per_second):
    assert rate(value) == per_second


@pytest.mark.parametrize("value", ["10/x", "ten/s", "-1/s", "nan", "inf", True, [10], "10/ s"])
def test_a_rate_that_is_not_one_is_refused_at_the_decorator(fresh_app, value):
    with pytest.raises(ImproperlyConfigured, match="is not a rate"):
        fresh_app.task(rate_limit=value)(lambda: None)
    assert all(name.startswith("celery.") for name in fresh_app.tasks)  # only the built-ins


def test_annotations_and_the_default_rate_set_the_limits(fresh_app):
    failures = []

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        failures.append((self.name, exc))

    fresh_app.conf.task_annotations = [{"fresh.mul": {"rate_limit": "1/s", "max_retries": 9,
                                                      "autoretry_for": [KeyError]}},
                                       {"fresh.mul": {"rate_limit": "9/s"}},  # not the first
                                       {"*": {"on_failure": on_failure}}]
    fresh_app.conf.task_default_rate_limit = "60/m"

    @fresh_app.task(name="fresh.add", rate_limit="4/s")
    def add(x, y):
        return x + y

    @fresh_app.task(name="fresh.mul")
    def mul(x, y):
        return x * y

    @fresh_app.task(name="fresh.ping")
    def ping():
        return "pong"

    own = {k: v for k, v in fresh_app.rate_intervals().items() if not k.startswith("celery.")}
    assert own == {"fresh.add": 0.25, "fresh.mul": 1.0, "fresh.ping": 1.0}
    assert (mul.max_retries, mul.autoretry_for) == (9, (KeyError,))  # as the option makes it
    mul.on_failure(ValueError("x"), "id", (), {}, None)  # bound to the task, as Celery's
    assert failures[0][0] == "fresh.mul"
    fresh_app.conf.task_annotations = {"fresh.mul": {"rate_limit": "1/s"},  # set anew: applied
                                       "*": {"rate_limit": "2/s"}}
    assert set(fresh_app.rate_intervals().values()) == {0.5}  # "*" has the last word
    fresh_app.conf.worker_disable_rate_limits = True
    assert fresh_app.rate_intervals() == {}


@pytest.mark.parametrize("annotations, error", [
    ({"fresh.add": {"rate_limit": "10/x"}}, "is not a rate"),
    ({"*": {"serializer": "pickle"}}, "serializer 'pickle' is not supported"),
    ({"*": {"autoretry_for": ["ValueError"]}}, "must hold exception classes"),
    ("proj.annotations.Annotate", "is not supported"),
    ({"fresh.add": "10/s"}, "is not supported")])
def test_annotations_miniq_cannot_apply_are_refused(fresh_app, annotations, error):
    @fresh_app.task(name="fresh.add")
    def add(x, y):
        return x + y

    with pytest.raises(ImproperlyConfigured, match=error):
        fresh_app.config_from_object({"task_annotations": annotations})


def test_annotations_set_any_attribute_and_wrap_a_method_as_celerys(fresh_app):
    """As Celery's Task.annotate: a name the task lacks becomes an attribute, and
    "@name" puts value(method) in the method's place."""
    seen = []

    def noted(method):
        def on_failure(self, exc, *rest):
            seen.append(("wrapped", self.name))
            return method(self, exc, *rest)
        return on_failure

    fresh_app.conf.task_annotations = {"fresh.add": {"custom_attr": 42, "@on_failure": noted}}

    @fresh_app.task(name="fresh.add")
    def add(x, y):
        return x + y

    add.on_failure(ValueError("x"), "id", (), {}, None)
    assert (add.custom_attr, seen) == (42, [("wrapped", "fresh.add")])


def test_a_task_class_with_a_bad_rate_is_refused_too(fresh_app):
    class Paced(Task):
        rate_limit = "fast"

    with pytest.raises(ImproperlyConfigured, match="fresh.add: rate_limit='fast'"):
        @fresh_app.task(name="fresh.add", base=Paced)
        def add(x, y):
            return x + y
