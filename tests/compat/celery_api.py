"""Tasks written only in Celery's API: the same file runs on miniq and on Celery.

The implementation is picked by MINIQ_COMPAT_IMPL ("miniq" or "celery"); a
user moving to Celery changes only the import line.
"""
import importlib
import os
import time

impl = importlib.import_module(os.environ.get("MINIQ_COMPAT_IMPL", "miniq"))
Celery, chain, group = impl.Celery, impl.chain, impl.group
SoftTimeLimitExceeded = importlib.import_module(impl.__name__ + ".exceptions").SoftTimeLimitExceeded

app = Celery("compat")
if impl.__name__ == "celery":  # Celery's server-free transport and result store
    folder = os.environ["COMPAT_DIR"]
    app.conf.update(
        broker_url="filesystem://", result_backend=f"file://{folder}/results",
        broker_transport_options={"data_folder_in": f"{folder}/queue",
                                  "data_folder_out": f"{folder}/queue",
                                  "processed_folder": f"{folder}/done"})


@app.task
def add(x, y):
    return x + y


@app.task(bind=True)
def whoami(self):
    return self.request.id


@app.task(bind=True, max_retries=3)
def flaky(self):
    if self.request.retries < 2:
        raise self.retry(countdown=0.1)
    return self.request.retries


@app.task(soft_time_limit=0.5, time_limit=10)
def polite():
    try:
        time.sleep(5)
    except SoftTimeLimitExceeded:
        return "cleaned up"
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
