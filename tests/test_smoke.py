"""The basic flow, end to end: define, start a worker, send, read the result."""
from tests import tasks


def test_delay_get_round_trip(app, start_worker):
    start_worker("-c", "2")
    result = tasks.add.delay(4, 5)
    assert result.get(timeout=10) == 9
    assert result.state == "SUCCESS"
