"""The examples of the explainer miniq grew from (Celery's task/worker model and its
time limits), written as a user would, with ``miniq`` in place of ``celery``: an app
module with ``include``, started as ``-A celery_app worker``, its tasks sent by name."""
import os

import pytest

from miniq.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from tests.conftest import ROOT, wait_for

CELERY_APP = """
from miniq import Celery

app = Celery('celery_learning', include=[
    'tasks.basic_tasks',      # the worker imports these modules
    'tasks.advanced_tasks',
])
app.conf.update(
    task_soft_time_limit=240,
    task_time_limit=300,
)
"""

BASIC_TASKS = """
from celery_app import app

@app.task
def add(x, y):
    return x + y
"""

# The explainer's examples, with seconds for minutes so that they finish in a test.
ADVANCED_TASKS = """
import os
import time

from miniq.exceptions import SoftTimeLimitExceeded
from celery_app import app

MARKS = {marks!r}

def mark(name):
    open(os.path.join(MARKS, name), "w").close()

def do_work():
    time.sleep(0.01)

def cleanup():
    mark("cleanup")

def save_checkpoint():
    mark("checkpoint")

def process_item(i):
    time.sleep(0.001)

@app.task(bind=True, soft_time_limit=0.5)
def my_task(self):
    try:
        while True:
            do_work()
    except SoftTimeLimitExceeded:
        cleanup()
        return "任务超时，已清理"

@app.task(bind=True, time_limit=1)
def process_data(self):
    try:
        file = open(os.path.join(MARKS, 'data.txt'), 'w')
        for i in range(1000000):
            file.write(f"data {{i}}\\n")
            time.sleep(0.001)
        file.close()
    except Exception as e:
        pass
    finally:
        cleanup()  # runs: the hard limit's SystemExit, before its SIGKILL

@app.task(bind=True, soft_time_limit=0.5, time_limit=3)
def guarded_task(self):
    try:
        while True:
            do_work()
    except SoftTimeLimitExceeded:
        self.update_state(state='FAILURE', meta={{'error': '任务超时，已保存中间状态'}})
        save_checkpoint()
        cleanup()
        raise

@app.task(bind=True, soft_time_limit=240)
def long_task(self):
    for i in range(1000000):
        if self.is_aborted():
            save_checkpoint()
            return "任务已中断"
        process_item(i)
        self.update_state(state='PROGRESS', meta={{'current': i, 'total': 1000000}})
"""


@pytest.fixture
def seed(tmp_path, start_worker):
    """The explainer's project in a folder of its own; start() runs its worker."""
    project, marks = tmp_path / "project", tmp_path / "marks"
    (project / "tasks").mkdir(parents=True)
    marks.mkdir()
    (project / "celery_app.py").write_text(CELERY_APP)
    (project / "tasks" / "__init__.py").write_text("")
    (project / "tasks" / "basic_tasks.py").write_text(BASIC_TASKS)
    (project / "tasks" / "advanced_tasks.py").write_text(ADVANCED_TASKS.format(marks=str(marks)))

    def start(*args):
        return start_worker(*args, app_path="celery_app",
                            env={"PYTHONPATH": os.pathsep.join([str(project), ROOT])})
    return start, marks


def test_a_task_sent_before_any_worker_waits_for_one(app, seed):
    start, _ = seed
    result = app.send_task("tasks.basic_tasks.add", (4, 5))
    assert result.state == "PENDING"  # sent, not run: no worker yet
    start("-c", "4")
    assert result.get(timeout=30) == 9


def test_soft_limit_lets_the_task_clean_up_and_return(app, seed):
    start, marks = seed
    start("-c", "1")
    assert app.send_task("tasks.advanced_tasks.my_task").get(timeout=30) == "任务超时，已清理"
    assert (marks / "cleanup").exists()
    assert app.send_task("tasks.basic_tasks.add", (1, 2)).get(timeout=30) == 3  # it lives on


def test_hard_limit_kills_the_child_once_its_finally_ran(app, seed):
    """The explainer says the finally block never runs, a SIGKILL alone. Celery 5.7's pool
    sends SIGTERM first, and the task's SystemExit runs it, then SIGKILL 0.1 s later:
    miniq does as Celery does."""
    start, marks = seed
    start("-c", "1")
    result = app.send_task("tasks.advanced_tasks.process_data")
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=30)
    assert (marks / "data.txt").exists() and (marks / "cleanup").exists()
    assert app.send_task("tasks.basic_tasks.add", (1, 2)).get(timeout=30) == 3  # a fresh child


def test_soft_limit_handler_saves_state_and_reraises(app, seed):
    start, marks = seed
    start("-c", "1")
    result = app.send_task("tasks.advanced_tasks.guarded_task")
    with pytest.raises(SoftTimeLimitExceeded):
        result.get(timeout=30)
    assert result.state == "FAILURE"
    assert (marks / "checkpoint").exists() and (marks / "cleanup").exists()


def test_long_task_reports_progress_and_stops_when_aborted(app, seed):
    start, marks = seed
    start("-c", "1")
    result = app.send_task("tasks.advanced_tasks.long_task")
    wait_for(lambda: result.state == "PROGRESS" and result.info["current"] > 10, timeout=30,
             message="progress reported")
    assert result.info["total"] == 1000000
    result.abort()
    assert result.get(timeout=30) == "任务已中断"
    assert (marks / "checkpoint").exists()
