"""An SVG chart of bench.py's figures, side by side, from the standard library only.

    python benchmarks/bench.py > report.json && python benchmarks/chart.py report.json

bench.py writes benchmarks/chart.svg itself after a run of every system; this script
redraws it from a saved report. Each panel is one figure with a bar per system, on a
log scale (the gaps span orders of magnitude); lower is better where the title says.
"""
import json
import math
import os
import sys
from xml.sax.saxutils import escape

SYSTEMS = [("miniq", "miniq", "#2b6cb0"), ("ceiling", "bare pipeline", "#a0aec0"),
           ("huey", "Huey (SQLite)", "#dd6b20"), ("celery_redis", "Celery + Redis", "#38a169")]
PANELS = [("enqueue_per_s", "delay() per second"), ("drain_per_s", "drain, tasks per second"),
          ("rtt_p50_ms", "round trip p50, ms (lower is better)"),
          ("producers_4_s", "4 producers x 2,500 tasks, s (lower is better)"),
          ("idle_cpu_percent", "idle CPU, % of a core (lower is better)")]
WIDTH, PANEL_H, BAR_H, LEFT = 640, 120, 18, 130


def svg(report: dict) -> str:
    """The chart as SVG text: a panel per figure, a bar per system that has it."""
    machine = report.get("machine", {})
    parts, y = [], 30
    note = f"{machine.get('cpus', '?')} cores, {machine.get('date', '')}: compare within one run"
    parts.append(f'<text x="10" y="18" font-size="12" fill="#4a5568">{escape(note)}</text>')
    for key, title in PANELS:
        bars = [(label, color, report[name][key]) for name, label, color in SYSTEMS
                if isinstance(report.get(name), dict) and report[name].get(key)]
        if not bars:
            continue
        parts.append(f'<text x="10" y="{y + 14}" font-size="13" font-weight="bold">'
                     f'{escape(title)}</text>')
        top = max(value for _, _, value in bars)
        floor = min(value for _, _, value in bars) / 10
        for i, (label, color, value) in enumerate(bars):
            share = math.log10(value / floor) / math.log10(top / floor)
            width = max(2, round(share * (WIDTH - LEFT - 70)))
            row = y + 22 + i * (BAR_H + 4)
            parts.append(f'<text x="10" y="{row + 13}" font-size="12">{escape(label)}</text>'
                         f'<rect x="{LEFT}" y="{row}" width="{width}" height="{BAR_H}"'
                         f' fill="{color}"/><text x="{LEFT + width + 5}" y="{row + 13}"'
                         f' font-size="12">{value:g}</text>')
        y += 30 + len(bars) * (BAR_H + 4)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{y}"'
            f' font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>'
            f'{"".join(parts)}</svg>\n')


def write(report: dict, path: str = os.path.join(os.path.dirname(__file__), "chart.svg")) -> str:
    with open(path, "w") as f:
        f.write(svg(report))
    return path


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(write(json.load(f)))
