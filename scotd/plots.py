"""The report's PNG plots (matplotlib, imported only when a report is written): accuracy per run, against N, per
corpus selector and per method and student model, each with its 95 % Wilson intervals as error bars."""

from __future__ import annotations

from pathlib import Path

COLOURS = {"teacher": "#4c72b0", "untrained": "#8c8c8c", "label_only": "#dd8452", "scotd": "#55a868"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _errors(points: list[dict]) -> list[list[float]]:
    """Distances from each accuracy (in %) down and up to its interval (none where a point has no interval)."""
    acc = [100 * p["accuracy"] for p in points]
    low = [max(0.0, a - 100 * p["ci95"][0]) if p.get("ci95") else 0.0 for a, p in zip(acc, points)]
    high = [max(0.0, 100 * p["ci95"][1] - a) if p.get("ci95") else 0.0 for a, p in zip(acc, points)]
    return [low, high]


def plot_accuracy(report: dict, path: Path) -> None:
    """Bar chart of accuracy per run with the 95 % intervals as error bars."""
    plt = _pyplot()
    rows = report["rows"]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(rows)), 3.6))
    ax.bar(range(len(rows)), [100 * r["accuracy"] for r in rows], yerr=_errors(rows), capsize=4,
           color=[COLOURS.get(r["kind"], "#937860") for r in rows])
    ax.set_xticks(range(len(rows)), [r["run"] for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%), 95 % CI")
    ax.set_ylim(0, 100)
    totals = sorted({r["total"] for r in rows})  # experiments combined in one report may differ
    ax.set_title(f"{report['experiment']}: {'/'.join(map(str, totals)) or 0} evaluation questions", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_study(points: list[dict], x: str, path: Path, title: str, series: str = "group") -> None:
    """Accuracy against ``x`` with 95 % intervals, one series per value of ``series``: for N a line per series;
    otherwise grouped bars, a bar per series in each group of ``x`` (selectors per student; methods per model)."""
    plt = _pyplot()
    names = list(dict.fromkeys(p[series] for p in points))
    keys = list(dict.fromkeys(p[x] for p in points))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(keys) * max(1, len(names)) ** 0.5), 3.6))
    if x == "n":
        for name in names:
            mine = sorted((p for p in points if p[series] == name), key=lambda p: p["n"])
            ax.errorbar([p["n"] for p in mine], [100 * p["accuracy"] for p in mine], yerr=_errors(mine), marker="o",
                        capsize=3, label=name)
        ax.set_xlabel("rationales per question (N)")
    else:
        width = 0.8 / len(names)
        for m, name in enumerate(names):
            mine = {p[x]: p for p in points if p[series] == name}
            at = [k for k, key in enumerate(keys) if key in mine]
            shown = [mine[keys[k]] for k in at]
            ax.bar([k + m * width for k in at], [100 * p["accuracy"] for p in shown], width, yerr=_errors(shown),
                   capsize=3, label=name)
        ax.set_xticks([k + width * (len(names) - 1) / 2 for k in range(len(keys))], keys, fontsize=8,
                      rotation=20 if len(keys) > 4 else 0, ha="right" if len(keys) > 4 else "center")
    ax.set_ylabel("accuracy (%), 95 % CI")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
