"""The PNG: the run's figures as one picture a person would rather read than the tables.

Seven panels, eight with papertiger on Redis: the cost of every operation
side by side (log scale; papertiger and each peer in their own colour, the
floor a black bar across each group); read throughput by reader processes;
write throughput by writer processes; cost by namespace size relative to the
smallest; memory per byte held; papertiger on Redis when it ran; a new
process's first read and the memory of N reader processes (the last two from
:mod:`.readers`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .report import LABELS, machine_line

__all__ = ["COLOURS", "draw"]

COLOURS = {
    "papertiger": "#F28E2B",
    "manager": "#4E79A7",
    "redis": "#E15759",
    "floor": "#222222",
}
NAMES = {
    "papertiger": "papertiger",
    "manager": "Manager().dict()",
    "redis": "Redis",
    "floor": "floor",
}
SHORT = {
    "list": "list(10)",
    "find_by_customer": "find_by_\ncustomer",
    "insert_many": "insert_many\n(per record)",
    "catch_up": "catch-up\n(per effect)",
}


def _us(seconds: float) -> str:
    us = seconds * 1e6
    if us < 1:
        return f"{us * 1000:.0f}ns"
    if us < 10:
        return f"{us:.1f}µs"
    if us < 1000:
        return f"{us:.0f}µs"
    return f"{us / 1000:.1f}ms"


def _times(ratio: float) -> str:
    return f"{ratio:.0f}×" if ratio >= 10 else f"{ratio:.2g}×"


def _thousands(value: float, _pos: int) -> str:
    return f"{value / 1000:.0f}k" if value >= 1000 else f"{value:.0f}"


def _operations(ax: Any, raw: dict[str, Any]) -> None:
    rows = raw["operations"]
    peers = [p for p in ("manager", "redis") if any(p in r["median_s"] for r in rows)]
    systems = ["papertiger", *peers]
    width = 0.8 / len(systems)
    for i, row in enumerate(rows):
        med = row["median_s"]
        for j, system in enumerate(systems):
            value = med.get(system)
            if value is None:
                continue
            x = i - 0.4 + width * (j + 0.5)
            ax.bar(x, value * 1e6, width * 0.92, color=COLOURS[system], zorder=2)
            if system == "papertiger":
                text = _us(value)
                ratio = row.get("papertiger_vs_floor")
                if ratio is not None:
                    text += f"\n{ratio:.2f}× floor"
            else:
                text = _times(row["peer_vs_papertiger"][system])
            ax.annotate(
                text,
                (x, value * 1e6),
                textcoords="offset points",
                xytext=(0, 2),
                ha="center",
                va="bottom",
                fontsize=7,
                color="#333333",
                zorder=5,
                bbox={"boxstyle": "square,pad=0.05", "fc": "white", "ec": "none", "alpha": 0.75},
            )
        floor = med.get("floor")
        if floor is not None:
            ax.hlines(floor * 1e6, i - 0.44, i + 0.44, colors=COLOURS["floor"], lw=2.2, zorder=3)
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([SHORT.get(r["op"], LABELS[r["op"]]) for r in rows], fontsize=9)
    ax.set_ylabel("µs per operation (log scale)")
    ax.set_title(
        f"Cost per operation from a worker process, {raw['plan']['records']:,} records "
        "(lower is better; labels: papertiger's time and ratio to the floor, "
        "peers' time over papertiger's)",
        fontsize=10,
    )
    handles = [_patch(COLOURS[s], NAMES[s]) for s in systems]
    handles.append(_line(COLOURS["floor"], "floor (least possible work)"))
    ax.legend(handles=handles, loc="upper left", fontsize=8, ncol=len(handles), frameon=False)
    ax.grid(axis="y", which="major", color="#dddddd", zorder=0)
    low, high = ax.get_ylim()
    ax.set_ylim(low, high * 4)


def _patch(colour: str, label: str) -> Any:
    from matplotlib.patches import Patch

    return Patch(color=colour, label=label)


def _line(colour: str, label: str, style: str = "-") -> Any:
    from matplotlib.lines import Line2D

    return Line2D([0], [0], color=colour, lw=2.2, ls=style, label=label)


def _scaling(ax: Any, raw: dict[str, Any]) -> None:
    from matplotlib.ticker import FuncFormatter

    scaling = raw.get("scaling") or {}
    readers = scaling.get("readers", [])
    found = scaling.get("ops_per_s", {})
    for system in [s for s in ("floor", "papertiger", "manager", "redis") if s in found]:
        ys = [found[system][str(k)] for k in readers]
        ax.plot(
            readers,
            ys,
            marker="o",
            color=COLOURS[system],
            ls="--" if system == "floor" else "-",
            label=NAMES[system],
        )
    cores = raw.get("machine", {}).get("cores")
    if cores:
        ax.axvline(cores, color="#999999", lw=1, ls=":")
        ax.annotate(
            f"{cores} cores", (cores, 0), xycoords=("data", "axes fraction"), xytext=(3, 4),
            textcoords="offset points", fontsize=7, color="#666666",
        )  # fmt: skip
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.set_xticks(readers)
    ax.set_xlabel("reader processes")
    ax.set_ylabel("total get/s, all readers")
    ax.set_title("Read throughput by reader processes", fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    ax.grid(color="#eeeeee")


def _writers(ax: Any, raw: dict[str, Any]) -> None:
    from matplotlib.ticker import FuncFormatter

    writers = raw.get("writers") or {}
    counts = writers.get("writers", [])
    found = writers.get("inserts_per_s", {})
    for system in [s for s in ("papertiger", "manager", "redis") if s in found]:
        ax.plot(
            counts,
            [found[system][str(k)] for k in counts],
            marker="o",
            color=COLOURS[system],
            label=NAMES[system] + (" SET" if system == "redis" else ""),
        )
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.set_xticks(counts)
    ax.set_xlabel("writer processes")
    ax.set_ylabel("total inserts/s, all writers")
    ax.set_title("Write throughput by writer processes", fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    ax.grid(color="#eeeeee")


def _growth(ax: Any, raw: dict[str, Any]) -> None:
    sizes = sorted(raw.get("sizes", []))
    highest = 0.0
    for row in raw.get("growth", []):
        base = row["papertiger_s"].get(str(sizes[0]))
        if not base:
            continue
        ys = [(row["papertiger_s"].get(str(n)) or float("nan")) / base for n in sizes]
        highest = max([highest, *(y for y in ys if y == y)])
        ax.plot(sizes, ys, marker="o", label=LABELS[row["op"]])
    if highest > 4:
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}×"))
    else:  # a flat line should look flat: show at least 0.8 to 1.5 times
        low, high = ax.get_ylim()
        ax.set_ylim(min(0.8, low), max(1.5, high))
    ax.axhline(1.25, color="#aa0000", lw=1, ls="--")
    ax.annotate(
        "target 1.25×", (0, 1.25), xycoords=("axes fraction", "data"), xytext=(4, 3),
        textcoords="offset points", ha="left", fontsize=7, color="#aa0000",
    )  # fmt: skip
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(sizes)
    ax.set_xticklabels([f"{n:,}" for n in sizes], fontsize=8)
    ax.set_xlabel("records in the namespace (log)")
    ax.set_ylabel(f"papertiger's cost / cost at {sizes[0]:,}" if sizes else "")
    ax.set_title("Growth: cost by namespace size", fontsize=10)
    ax.legend(fontsize=7, frameon=False, ncol=2)
    ax.grid(color="#eeeeee")


def _memory(ax: Any, raw: dict[str, Any]) -> None:
    ratios = raw.get("memory_ratios") or {}
    rows = [
        ("replica", "papertiger\nreplica", COLOURS["papertiger"]),
        ("papertiger_manager", "papertiger\nmanager", COLOURS["papertiger"]),
        ("redis", "Redis\nserver", COLOURS["redis"]),
        ("manager", "Manager\nserver", COLOURS["manager"]),
    ]
    rows = [r for r in rows if r[0] in ratios]
    for i, (key, _, colour) in enumerate(rows):
        r = ratios[key]
        anon = max(0.0, r.get("rss_anon") or 0.0)
        shm = max(0.0, r.get("rss_shmem") or 0.0)
        rest = max(0.0, (r.get("rss") or 0.0) - anon - shm)
        ax.barh(i, anon, color=colour, zorder=2)
        ax.barh(i, shm, left=anon, color=colour, alpha=0.45, hatch="//", zorder=2)
        if rest > 0.005:
            ax.barh(i, rest, left=anon + shm, color="#bbbbbb", zorder=2)
        ax.annotate(
            f"{r['rss']:.2f}×", (anon + shm + rest, i), xytext=(3, 0), textcoords="offset points",
            va="center", fontsize=8,
        )  # fmt: skip
    ax.axvline(1.5, color="#aa0000", lw=1, ls="--")
    ax.axvline(1.0, color="#222222", lw=1)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r[1] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("resident memory gained / msgpack bytes held")
    ax.set_title("Memory per byte held (hatched: shared memory)", fontsize=10)
    ax.annotate(
        "replica target 1.5×", (1.5, 0), xycoords=("data", "axes fraction"), xytext=(3, 4),
        textcoords="offset points", fontsize=7, color="#aa0000",
    )  # fmt: skip
    right = max([ratios[k]["rss"] or 0 for k, _, _ in rows] + [1.6])
    ax.set_xlim(0, right * 1.2)
    ax.grid(axis="x", color="#eeeeee", zorder=0)


def draw(raw: dict[str, Any], path: Path) -> None:
    """Write the chart of an analysed run (:func:`.report.analyse`) to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .readers import draw_first_read, draw_readers_memory

    panels: list[Any] = [_scaling, _writers, _growth, _memory]
    if raw.get("on_redis", {}).get("available"):
        from .on_redis import draw_panel

        panels.append(draw_panel)
    fig = plt.figure(figsize=(max(15.0, 4.75 * len(panels)), 13.5), dpi=100)
    rows = fig.add_gridspec(3, 1, height_ratios=[1.25, 1, 1], hspace=0.36)
    _operations(fig.add_subplot(rows[0]), raw)
    middle = rows[1].subgridspec(1, len(panels), wspace=0.28)
    for column, panel in enumerate(panels):
        panel(fig.add_subplot(middle[0, column]), raw)
    bottom = rows[2].subgridspec(1, 2, wspace=0.25)
    draw_first_read(fig.add_subplot(bottom[0, 0]), raw, COLOURS)
    draw_readers_memory(fig.add_subplot(bottom[0, 1]), raw, COLOURS)
    load = raw.get("machine", {}).get("load_note")
    fig.suptitle(
        f"papertiger bench ({raw['plan']['name']}), {raw.get('date', '')}: {machine_line(raw)}"
        + (f" — {load}" if load else ""),
        fontsize=11,
    )
    fig.subplots_adjust(left=0.05, right=0.98, top=0.94, bottom=0.05)
    fig.savefig(path, dpi=100)
    plt.close(fig)
