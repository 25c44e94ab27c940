"""The road to Celery: one module in Celery's API gives the same results on
miniq and, when Celery is installed (the `celery` extra), on Celery itself."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

EXPECTED = {"add": 5, "request_id": True, "retry": 2, "soft_limit": "cleaned up",
            "hard_limit": "raised TimeLimitExceeded", "failure": "raised ValueError",
            "soft_over_hard": "raised ValueError", "chain": 6, "group": [0, 2, 4, 6]}


def run_scenario(impl, tmp_path):
    env = dict(os.environ, MINIQ_COMPAT_IMPL=impl, COMPAT_DIR=str(tmp_path),
               MINIQ_BROKER_URL=f"sqlite:///{tmp_path / 'compat.db'}", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "tests.compat.scenario"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_celery_api_module_runs_unchanged_on_miniq(tmp_path):
    assert run_scenario("miniq", tmp_path) == EXPECTED


@pytest.mark.slow
def test_the_same_module_gives_the_same_results_on_celery(tmp_path):
    pytest.importorskip("celery")
    assert run_scenario("celery", tmp_path) == EXPECTED
