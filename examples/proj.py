"""A small app: the tasks the demo sends (run a worker with -A proj from this folder)."""
import time

from miniq import Miniq
from miniq.exceptions import SoftTimeLimitExceeded

app = Miniq("proj", broker="sqlite:///proj.db")
app.conf.update(task_soft_time_limit=240, task_time_limit=300)


@app.task
def add(x, y):
    return x + y


@app.task(bind=True)
def crunch(self, n):
    for i in range(n):
        if self.is_aborted():
            return "stopped"
        self.update_state(state="PROGRESS", meta={"current": i, "total": n})
    return n


@app.task(bind=True, soft_time_limit=1, time_limit=3)
def polite(self, seconds):
    """Gets SoftTimeLimitExceeded at 1 s, cleans up, and returns normally."""
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return "cleaned up after the soft limit"
    return "done in time"


@app.task(soft_time_limit=0.5, time_limit=1)  # as Celery: a soft limit above the hard
def stubborn(seconds):  # one (the conf's 240 s) is refused at the call, so it has its own
    """Sleeps on past its soft limit: at 1 s the manager kills its child (SIGKILL)."""
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        time.sleep(seconds)
    return "never returned"
