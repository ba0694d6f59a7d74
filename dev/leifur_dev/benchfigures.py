"""The benchmarks' figures: what each benchmark draws from its results, and the images in
docs/img/ redrawn from recorded results.

The benchmarks write into LEIFUR_BENCH_FIGURES (default: leifur-bench-figures in the temporary
directory). `python -m leifur_dev.benchfigures docs/img` redraws the committed images: the
failover timeline from a probe's record kept in dev/figures/ (written by the failover benchmark),
the scale curves from the figures recorded in docs/benchmarks.md, copied below.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from leifur_dev.svgplot import Mark, Series, Span, line_chart, timeline

REPO = Path(__file__).resolve().parents[2]
RECORDED = REPO / "dev" / "figures"
# How much of the probe's record the timeline shows on each side of the gap, in seconds.
CONTEXT = 0.25


def figures_dir() -> Path:
    """Where the benchmarks write their figures (created)."""
    path = Path(os.environ.get("LEIFUR_BENCH_FIGURES") or Path(tempfile.gettempdir()) / "leifur-bench-figures")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write(name: str, svg: str, directory: Path | None = None) -> Path:
    path = (directory or figures_dir()) / name
    path.write_text(svg)
    print(f"  figure: {path}")
    return path


def failover_record(result: dict, killed_at: float, names: Mapping[str, str], fault: str) -> dict:
    """What the timeline needs from a probe's result (leifur_dev.probe), kept to the window around
    the gap: the answers (seconds since the probe started, MAC), when the fault came, node names."""
    gap_at, gap = result["longest_gap_at"], result["longest_gap"]
    lo, hi = min(killed_at, gap_at) - CONTEXT, gap_at + gap + CONTEXT
    return {"fault": fault, "killed_at": killed_at, "longest_gap": gap, "longest_gap_at": gap_at,
            "names": dict(names), "answers": [[t, mac] for t, mac in result["answers"] if lo <= t <= hi]}


def failover_timeline(record: dict, title: str) -> str:
    """Which MAC answered the client's probes, in milliseconds around the fault; the gap shaded."""
    zero = record["killed_at"]
    lanes: dict[str, list[float]] = {}
    for t, mac in record["answers"]:
        label = f"{record['names'].get(mac, '?')} ({mac})"
        lanes.setdefault(label, []).append(round((t - zero) * 1000, 1))
    start = (record["longest_gap_at"] - zero) * 1000
    gap_ms = record["longest_gap"] * 1000
    return timeline(list(lanes.items()), title=title,
                    x_label=f"milliseconds since the owner's {record['fault']} (a tick: one ARP answer to the client)",
                    marks=[Mark(0.0, record["fault"])],
                    spans=[Span(start, start + gap_ms, f"no answer for {gap_ms:.0f} ms")])


def ips_over_time(curves: Mapping[str, Sequence[float]], *, title: str, marks: Sequence[Mark] = ()) -> str:
    """Cumulative counts over time: for each curve, how many events (Services created, Services with
    their IPs) had happened by then; times in seconds."""
    series = [Series(name, [(round(t, 3), i + 1) for i, t in enumerate(sorted(times))], markers=False)
              for name, times in curves.items()]
    return line_chart(series, title=title, x_label="seconds since the controller started", y_label="Services",
                      marks=marks)


def against_n(runs: Mapping[str, Sequence[tuple[int, float]]], *, title: str, y_label: str) -> str:
    """One line per run of a figure measured at several numbers of Services."""
    return line_chart([Series(name, sorted(points)) for name, points in runs.items()],
                      title=title, x_label="Services", y_label=y_label)


# -- recorded results (docs/benchmarks.md, section 5, measured 2026-12-02) --------------------

THROUGHPUT = {  # backlog throughput, Services/s, from ready to the last IP
    "run G (current)": [(1000, 556), (5000, 554), (10000, 504)],
    "run E": [(1000, 146), (5000, 140)],
    "run D": [(1000, 107), (5000, 107), (10000, 115)],
    "run A (before)": [(1000, 83), (5000, 65)],
}
PEAK_RSS = {  # controller peak RSS, MB, once every Service of the backlog has its IPs
    "run G (current)": [(0, 51.4), (1000, 61.2), (5000, 83.3), (10000, 112.0)],
    "run F (memory cut)": [(0, 50.1), (1000, 59.6), (5000, 84.6)],
    "run E": [(0, 83), (1000, 97), (5000, 137)],
    "run D": [(0, 83), (1000, 98), (5000, 138), (10000, 191)],
    "run A (before)": [(1000, 105), (5000, 172)],
}
FAILOVER = "failover-signed-SIGKILL.json"


def recorded(out: Path) -> list[Path]:
    """The committed images, from recorded results."""
    record = json.loads((RECORDED / FAILOVER).read_text())
    return [
        write("failover-timeline.svg", failover_timeline(
            record, "Failover after SIGKILL of the owning agent: who answered the client's ARP probes"), out),
        write("controller-scale-throughput.svg", against_n(
            THROUGHPUT, title="Controller: backlog throughput against its size (recorded runs)",
            y_label="Services given IPs per second"), out),
        write("controller-scale-memory.svg", against_n(
            PEAK_RSS, title="Controller: peak memory against the number of Services (recorded runs)",
            y_label="peak RSS, MB"), out),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where to write the images (docs/img)")
    recorded(parser.parse_args(argv).out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
