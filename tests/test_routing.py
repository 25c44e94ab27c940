"""Queues, routing and priority against real workers: the producer picks the
queue when it sends (apply_async(queue=), the task's queue=, task_routes,
task_default_queue); ``worker -Q`` serves only its queues."""
import json

import pytest

from miniq import chain
from miniq.exceptions import ImproperlyConfigured
from tests import tasks
from tests.conftest import wait_for


def queue_of(app, result):
    return app.broker.db.execute("SELECT queue FROM task WHERE id = ?", (result.id,)).fetchone()[0]


class ProducerConf:
    """Changes to app.conf for one test, undone by restore()."""

    def __init__(self, app):
        self.app, self.saved = app, {}

    def __call__(self, **values):
        for key, value in values.items():
            self.saved.setdefault(key, self.app.conf.get(key, ProducerConf))  # or unset
            self.app.conf[key] = value

    def restore(self):
        for key, value in self.saved.items():
            if value is ProducerConf:
                del self.app.conf[key]
            else:
                self.app.conf[key] = value
        self.saved.clear()


@pytest.fixture(autouse=True)
def producer_conf(app):
    """The app reads a task name's route once and starts afresh when its database
    changes; opening this test's database first makes every test here route from the
    settings it sets. Under changed settings the tests send only names that no other
    test module sends (tasks.route_exact, heavy_*, in_q_opt, default_probe)."""
    app.broker  # noqa: B018
    conf = ProducerConf(app)
    yield conf
    conf.restore()


def test_a_worker_runs_only_its_queue_and_a_worker_of_the_other_queue_runs_the_rest(
        app, start_worker):
    other = tasks.pid.apply_async(queue="b")  # first in line: a worker of queue a would take it
    mine = [tasks.pid.apply_async(queue="a") for _ in range(3)]
    assert queue_of(app, other) == "b" and queue_of(app, mine[0]) == "a"
    worker_a = start_worker("-c", "1", "-Q", "a")
    pids_a = {r.get(timeout=30) for r in mine}
    assert pids_a <= set(worker_a.children())
    assert other.state == "PENDING"
    assert app.broker.db.execute("SELECT status, worker FROM task WHERE id = ?",
                                 (other.id,)).fetchone() == (0, None)
    worker_b = start_worker("-c", "1", "-Q", "b")
    assert other.get(timeout=30) in worker_b.children()


def test_worker_with_several_queues_serves_each_and_not_the_default(app, start_worker):
    default = tasks.add.delay(0, 0)
    sent = [tasks.add.apply_async((1, 1), queue="a"), tasks.add.apply_async((2, 2), queue="b")]
    assert queue_of(app, default) == "celery"  # task_default_queue
    start_worker("-c", "2", "-Q", "a,b")
    assert [r.get(timeout=30) for r in sent] == [2, 4]
    assert default.state == "PENDING"


def test_task_option_queue_routes_the_task_and_apply_async_queue_beats_it(app, start_worker):
    opt = tasks.in_q_opt.delay(5)
    explicit = tasks.in_q_opt.apply_async((6,), queue="q_explicit")
    assert queue_of(app, opt) == "q_opt" and queue_of(app, explicit) == "q_explicit"
    start_worker("-c", "1")  # the default queue only
    assert tasks.add.delay(1, 2).get(timeout=30) == 3  # sent after opt, done before it
    assert opt.state == "PENDING"
    start_worker("-c", "1", "-Q", "q_opt")
    assert opt.get(timeout=30) == 5
    assert explicit.state == "PENDING"


def test_task_routes_by_exact_name_and_by_glob(app, start_worker, producer_conf):
    producer_conf(task_routes={"tests.tasks.route_exact": {"queue": "r_exact"},
                               "tests.tasks.heavy_*": {"queue": "r_heavy"}})
    exact = tasks.route_exact.delay("e")
    heavy = [tasks.heavy_one.delay(1), tasks.heavy_two.delay(2)]
    explicit = tasks.heavy_one.apply_async((3,), queue="r_explicit")  # beats the route
    assert queue_of(app, exact) == "r_exact"
    assert [queue_of(app, r) for r in heavy] == ["r_heavy", "r_heavy"]
    assert queue_of(app, explicit) == "r_explicit"
    start_worker("-c", "1", "-Q", "r_heavy")
    assert [r.get(timeout=30) for r in heavy] == [1, 2]
    assert exact.state == "PENDING" and explicit.state == "PENDING"
    start_worker("-c", "1", "-Q", "r_exact")  # the worker has no routes: the message says where
    assert exact.get(timeout=30) == "e"


def test_an_exchange_and_routing_key_reach_the_queue_bound_so_as_in_celery(
        app, start_worker, producer_conf):
    """A call's, a task's or a route's, without a queue: the one queue of task_queues bound
    so (a topic binding by its pattern; the exchange "" by name); refused where that is
    no queue or several. One of the two alone, as Celery's publisher sends it: to the
    queue otherwise chosen."""
    kombu = pytest.importorskip("kombu")
    producer_conf(task_queues=[kombu.Queue("celery"),
                               kombu.Queue("videos", kombu.Exchange("media"), routing_key="media.video"),
                               kombu.Queue("feeds", kombu.Exchange("t", type="topic"),
                                           routing_key="feed.#")],
                  task_routes={"tests.tasks.route_exact": {"exchange": "t", "routing_key": "feed.a"}})
    video = tasks.heavy_one.apply_async((1,), exchange="media", routing_key="media.video")
    feed = tasks.route_exact.delay("f")
    named = tasks.heavy_two.apply_async((2,), queue=kombu.Queue("videos"))  # by its name
    own = tasks.to_videos.delay(3)  # its own exchange and routing key
    by_name = tasks.heavy_two.apply_async((4,), exchange="", routing_key="feeds")
    alone = [tasks.heavy_one.apply_async((5,), routing_key="media.video"),
             tasks.heavy_one.apply_async((6,), exchange="media")]
    sent = [video, feed, named, own, by_name, *alone]
    assert [queue_of(app, r) for r in sent] == [
        "videos", "feeds", "videos", "videos", "feeds", "celery", "celery"]
    for unbound, error in (({"exchange": "media", "routing_key": 5}, "are text"),
                           ({"exchange": "media", "routing_key": "feed.x"}, "reaches 0 queues"),
                           ({"exchange": "t", "routing_key": "x"}, "reaches 0 queues")):
        with pytest.raises(ImproperlyConfigured, match=error):
            tasks.heavy_one.apply_async((1,), **unbound)
    start_worker("-c", "1", "-Q", "videos,feeds,celery")
    assert [r.get(timeout=30) for r in sent] == [1, "f", 2, 3, 4, 5, 6]


def test_a_queue_bound_by_a_list_of_bindings_is_reached_by_each(app, producer_conf):
    """kombu's Queue(name, [binding(exchange, routing_key), ...]): each binding reaches it."""
    kombu = pytest.importorskip("kombu")
    topic, media = kombu.Exchange("crawl", type="topic"), kombu.Exchange("media")
    producer_conf(task_queues=[kombu.Queue("celery"), kombu.Queue("authors", [
        kombu.binding(topic, routing_key="author.#"), kombu.binding(media, routing_key="img")])],
        task_routes={"tests.tasks.route_exact": {"exchange": "crawl", "exchange_type": "topic",
                                                 "routing_key": "author.fetch"}})
    sent = [tasks.route_exact.delay(1),
            tasks.heavy_one.apply_async((2,), exchange="media", routing_key="img")]
    assert [queue_of(app, r) for r in sent] == ["authors", "authors"]
    with pytest.raises(ImproperlyConfigured, match="reaches 0 queues"):
        tasks.heavy_one.apply_async((3,), exchange="crawl", routing_key="video.x")


def test_a_queue_given_with_a_routing_key_is_reached_as_celery_publishes(app, producer_conf):
    """Celery sends by the key to the exchange given, or to a topic queue's own exchange
    (the queue is then only declared); to a direct queue by its name. A call's and a
    route's alike."""
    kombu = pytest.importorskip("kombu")
    topic = kombu.Exchange("tasks", type="topic")
    producer_conf(task_queues=[kombu.Queue("default", topic, routing_key="task.#"),
                               kombu.Queue("feed_tasks", topic, routing_key="feed.#"),
                               kombu.Queue("images", kombu.Exchange("media"), routing_key="img"),
                               kombu.Queue("video", kombu.Exchange("media"), routing_key="vid")],
                  task_routes={"tests.tasks.route_exact": {"queue": "feed_tasks",
                                                           "routing_key": "task.import"}},
                  task_default_queue="default")
    sent = [tasks.route_exact.delay(1),
            tasks.heavy_one.apply_async((2,), queue="feed_tasks", routing_key="task.x"),
            tasks.heavy_one.apply_async((3,), queue="default", routing_key="feed.x"),
            tasks.heavy_one.apply_async((4,), queue="images", routing_key="vid"),  # direct
            tasks.heavy_one.apply_async((5,), queue="images", exchange="media",
                                        routing_key="vid"),
            tasks.heavy_one.apply_async((6,), routing_key="feed.y")]  # by the default's
    assert [queue_of(app, r) for r in sent] == ["default", "default", "feed_tasks", "images",
                                               "video", "feed_tasks"]
    with pytest.raises(ImproperlyConfigured, match="reaches 0 queues"):
        tasks.heavy_one.apply_async((6,), queue="default", routing_key="nothing.bound")


def test_task_routes_in_celery_s_ordered_form_of_pairs(app, producer_conf):
    """A list of (pattern, route) pairs, as Celery's docs give to keep their order."""
    import re
    producer_conf(task_routes=([("tests.tasks.heavy_*", {"queue": "r_glob"}),
                                (re.compile(r"tests\.tasks\..*"), {"queue": "r_any"})],))
    assert [queue_of(app, r) for r in (tasks.heavy_one.delay(1), tasks.route_exact.delay(2))] \
        == ["r_glob", "r_any"]


def test_a_name_the_app_lacks_takes_no_default_priority_as_in_celery(app, producer_conf):
    """task_default_priority is a registered task's own option: send_task of another name
    has none (a route's still holds)."""
    producer_conf(task_default_priority=5,
                  task_routes={"elsewhere.routed": {"queue": "r_x", "priority": 2}})
    assert [priority_of(app, app.send_task(name)) for name in
            ("elsewhere.unknown", "elsewhere.routed", tasks.route_exact.name)] == [0, 2, 5]


def test_worker_direct_serves_the_worker_s_own_queue(app, start_worker, producer_conf):
    """As Celery's: with worker_direct, a worker serves <node name>.dq2 too."""
    start_worker("-c", "1", "-n", "direct@box",
                 env={"MINIQ_TEST_CONF": json.dumps({"worker_direct": True})})
    assert tasks.add.apply_async((1, 2), queue="direct@box.dq2").get(timeout=30) == 3
    assert tasks.add.delay(2, 2).get(timeout=30) == 4  # and its other queues


def test_only_a_route_with_a_star_is_a_glob_as_in_celery(app, producer_conf):
    producer_conf(task_routes={"tests.tasks.route_exac?": "r_what", "tests.tasks.[r]oute_exact":
                               "r_set", "tests.tasks.route_*[t]": "r_star"})
    assert queue_of(app, tasks.route_exact.delay(1)) == "r_star"


def test_task_option_queue_beats_task_routes_as_in_celery(app, producer_conf):
    producer_conf(task_routes={"tests.tasks.in_q_opt": {"queue": "r_elsewhere"}})
    assert queue_of(app, tasks.in_q_opt.delay(1)) == "q_opt"


def priority_of(app, result):
    return app.broker.db.execute("SELECT priority FROM task WHERE id = ?",
                                 (result.id,)).fetchone()[0]


def test_task_routes_as_a_list_with_a_regex_and_a_priority_as_in_celery(app, producer_conf):
    import re
    producer_conf(task_routes=[{"tests.tasks.route_exact": {"queue": "r_list", "priority": 6}},
                               {re.compile(r"tests\.tasks\.heavy_\w+"): "r_regex"}],
                  task_default_priority=4)
    exact, heavy = tasks.route_exact.delay(1), tasks.heavy_one.delay(2)
    # a task takes task_default_priority as its own option, and that beats a route's
    assert (queue_of(app, exact), priority_of(app, exact)) == ("r_list", 4)
    assert (queue_of(app, heavy), priority_of(app, heavy)) == ("r_regex", 4)
    assert priority_of(app, tasks.heavy_two.apply_async((3,), priority=1)) == 1
    producer_conf(task_routes={"tests.tasks.route_exact*": {"priority": 6}})
    assert priority_of(app, app.send_task("tests.tasks.route_exact_elsewhere", (1,))) == 6
    producer_conf(task_default_priority=None)
    assert priority_of(app, tasks.route_exact.delay(1)) == 6
    assert priority_of(app, tasks.route_exact.apply_async((1,), priority=0)) == 0


def test_a_router_function_in_task_routes_is_refused_at_the_call(app, producer_conf):
    from miniq.exceptions import ImproperlyConfigured
    producer_conf(task_routes=(lambda name, args, kwargs, options, task=None: "r_fn",))
    with pytest.raises(ImproperlyConfigured, match="router"):
        tasks.default_probe.delay(1)


@pytest.mark.parametrize("queue", [["a", "b"], 5])
def test_a_route_to_a_queue_that_is_not_a_name_is_refused_at_the_call(app, producer_conf, queue):
    producer_conf(task_routes={"tests.tasks.route_exact": {"queue": queue}})
    with pytest.raises(TypeError, match="queue cannot be"):
        tasks.route_exact.delay(1)
    assert app.broker.db.execute("SELECT COUNT(*) FROM task").fetchone()[0] == 0


def test_task_inherit_parent_priority_gives_a_child_its_parents(app, start_worker):
    start_worker("-c", "1", env={"MINIQ_TEST_CONF": '{"task_inherit_parent_priority": true}'})
    parent = tasks.send_child.apply_async((1,), priority=3)
    child = app.AsyncResult(parent.get(timeout=30))
    assert child.get(timeout=30) == 2 and priority_of(app, child) == 3
    parent = tasks.send_child_at_7.apply_async((1,), priority=3)  # as Celery's: a child's
    child = app.AsyncResult(parent.get(timeout=30))  # own priority is not overridden
    assert child.get(timeout=30) == 2 and priority_of(app, child) == 7
    # as Celery's worker, it gives its priority to the next step of a chain, and to links
    steps = chain(tasks.add.s(1, 1), tasks.add.s(1), tasks.add.s(1)).apply_async(priority=3)
    link = tasks.add.s(1)
    called = link.freeze()
    linked = tasks.add.apply_async((1, 1), priority=6, link=link)
    assert (steps.get(timeout=30), linked.get(timeout=30), called.get(timeout=30)) == (4, 2, 3)
    assert [priority_of(app, r) for r in (steps.parent.parent, steps.parent, steps)] == [3, 3, 3]
    assert priority_of(app, called) == 6
    own = chain(tasks.add.s(1, 1), tasks.add.s(1).set(priority=9)).apply_async()
    assert own.get(timeout=30) == 3 and priority_of(app, own) == 9  # a parent's 0: its own


def test_task_default_queue_decides_where_unrouted_tasks_go_and_what_a_worker_serves(
        app, start_worker, producer_conf):
    assert app.conf.task_default_queue == "celery"
    producer_conf(task_default_queue="dq")
    probe = tasks.default_probe.delay("probe")
    producer_conf.restore()
    assert queue_of(app, probe) == "dq"
    start_worker("-c", "1")  # tests.tasks' own conf: the default queue "celery"
    assert tasks.pid.apply_async(queue="celery").get(timeout=30)
    assert probe.state == "PENDING"
    start_worker("-c", "1", env={"MINIQ_TEST_CONF": '{"task_default_queue": "dq"}'})  # no -Q
    assert probe.get(timeout=30) == "probe"


def test_higher_priority_runs_first_and_fifo_among_equals(app, start_worker, tmp_path):
    path = str(tmp_path / "order")
    sent = [("p0a", 0), ("p5a", 5), ("p0b", 0), ("p9", 9), ("p5b", 5), ("p0c", 0), ("p5c", 5)]
    results = [tasks.record.apply_async((path, token), priority=priority)
               for token, priority in sent]
    start_worker("-c", "1")
    wait_for(lambda: all(r.ready() for r in results), timeout=30, message="all recorded")
    with open(path) as f:
        order = [line.split()[0] for line in f]
    assert order == ["p9", "p5a", "p5b", "p5c", "p0a", "p0b", "p0c"]
