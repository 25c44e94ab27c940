"""An app module that makes a second app after its own (a test's, say): the app ``-A``
names is still the current one where a command or a worker loads it, as in Celery."""
from miniq import Celery, current_app

app = Celery("two_apps")
other = Celery("other")


@app.task
def current_name():
    return current_app.main
