"""benchmarks/chart.py draws bench.py's report: a panel per figure, a bar per system."""
import os
import sys
import xml.etree.ElementTree as ET

from tests.conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import chart  # noqa: E402

REPORT = {"machine": {"cpus": 2, "date": "2026-01-01"},
          "miniq": {"enqueue_per_s": 15000, "drain_per_s": 3700, "rtt_p50_ms": 1.0},
          "ceiling": {"drain_per_s": 5000, "rtt_p50_ms": 1.2},
          "celery_redis": {"enqueue_per_s": 1000, "drain_per_s": 550, "rtt_p50_ms": 3.5},
          "huey": {"skipped": "not importable here"}}


def bars(svg_text):
    """{panel title: [(label, width, value text)]}, read back from the SVG."""
    root = ET.fromstring(svg_text)
    texts = [e for e in root if e.tag.endswith("text")]
    rects = [e for e in root if e.tag.endswith("rect")][1:]  # the first is the background
    titles = [t.text for t in texts if t.get("font-weight") == "bold"]
    labels = [t for t in texts if t.get("font-weight") != "bold"][1:]  # after the note
    pairs = list(zip(labels[0::2], labels[1::2]))
    panels, i = {}, 0
    for title in titles:
        count = sum(1 for name, _, _ in chart.SYSTEMS if REPORT[name].get(_key(title)))
        panels[title] = [(label.text, float(rect.get("width")), value.text)
                         for (label, value), rect in zip(pairs[i:i + count], rects[i:i + count])]
        i += count
    return panels


def _key(title):
    return next(key for key, t in chart.PANELS if t == title)


def test_each_figure_has_a_bar_per_system_that_has_it_longest_for_the_largest():
    panels = bars(chart.svg(REPORT))
    drain = panels["drain, tasks per second"]
    assert [label for label, _, _ in drain] == ["miniq", "bare pipeline", "Celery + Redis"]
    assert [value for _, _, value in drain] == ["3700", "5000", "550"]
    widths = [width for _, width, _ in drain]
    assert widths[1] > widths[0] > widths[2]  # log scale keeps the order
    assert [label for label, _, _ in panels["delay() per second"]] == ["miniq", "Celery + Redis"]
    assert "idle CPU, % of a core (lower is better)" not in panels  # no system has it
