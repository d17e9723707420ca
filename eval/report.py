"""Reports of an evaluation: ``report.json`` (every number, percent), ``report.md`` (tables), PNG plots, and the
same table as text for stdout.

Numbers are in percent like the field's tables; the JSON keeps full precision, the tables print two decimals.
Plots use matplotlib's Agg backend (no display) and carry their own titles, axis labels and legends.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Union

import numpy as np

from eval.detection import DetectionResult, EK100DetectionResult
from eval.proposals import AR_AT, ProposalResult

Result = Union[DetectionResult, EK100DetectionResult, ProposalResult]
N_EXTREME_CLASSES = 5  # best / worst classes listed in report.md
MAX_BARS = 40  # per-class plot: all classes up to this many, else the best and worst half each


def write_report(result: Result, out_dir: str | Path, meta: dict) -> dict:
    """Write ``report.json``, ``report.md`` and the plots into ``out_dir``; return the JSON dict.

    ``meta`` (dataset, task, input paths, ...) is stored under ``"meta"`` and heads the Markdown.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {**result.to_dict(), "meta": meta}
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    plots = _plot(result, out)
    lines = [f"# {_title(result)}", ""]
    lines += [f"- {k}: `{v}`" for k, v in meta.items()] + [""]
    lines += [format_table(result), ""]
    lines += _markdown_details(result)
    lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    (out / "report.md").write_text("\n".join(lines))
    return report


def format_table(result: Result) -> str:
    """The headline table (Markdown, readable as plain text): mAP per tIoU and the average, or AR@AN and AUC."""
    if isinstance(result, ProposalResult):
        rows = [("AR@" + str(k), result.recall_at(k) * 100) for k in AR_AT] + [("**AUC**", result.auc)]
        return _table(("AN", "AR (%)"), [(name, f"{v:.2f}") for name, v in rows])
    if isinstance(result, EK100DetectionResult):
        tasks = result.tasks
        header = ("tIoU", *(f"{t} mAP (%)" for t in tasks))
        rows = [(f"{thr:.2f}", *(f"{r.mAP[i] * 100:.2f}" for r in tasks.values())) for i, thr in enumerate(result.tiou_thresholds)]
        rows.append(("**average**", *(f"**{r.average_mAP * 100:.2f}**" for r in tasks.values())))
        return _table(header, rows)
    rows = [(f"{thr:.2f}", f"{m * 100:.2f}") for thr, m in zip(result.tiou_thresholds, result.mAP)]
    rows.append(("**average**", f"**{result.average_mAP * 100:.2f}**"))
    return _table(("tIoU", "mAP (%)"), rows)


def _title(result: Result) -> str:
    if isinstance(result, ProposalResult):
        return "Proposals: average recall vs average number of proposals"
    return "Detection mAP at tIoU thresholds"


def _table(header: tuple, rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _markdown_details(result: Result) -> list[str]:
    if isinstance(result, ProposalResult):
        return ["## Counts", ""] + _count_lines(result.counts)
    tasks = result.tasks if isinstance(result, EK100DetectionResult) else {"": result}
    lines = []
    for name, task in tasks.items():
        prefix = f"{name}: " if name else ""
        order, mean_ap = _classes_by_ap(task)
        for heading, picked in (("Best", order[:N_EXTREME_CLASSES]), ("Worst", order[::-1][:N_EXTREME_CLASSES])):
            lines += [f"## {prefix}{heading} classes (AP averaged over tIoU)", ""]
            lines += [_table(("class", "AP (%)"), [(task.classes[c], f"{mean_ap[c] * 100:.2f}") for c in picked]), ""]
        lines += [f"## {prefix}Counts", ""] + _count_lines(task.counts)
    return lines


def _count_lines(counts: dict) -> list[str]:
    return [f"- {k.replace('_', ' ')}: {v}" for k, v in counts.items()] + [""]


def _classes_by_ap(result: DetectionResult) -> tuple[np.ndarray, np.ndarray]:
    """Class indices from best to worst AP averaged over thresholds (ties by class order), and those averages."""
    mean_ap = result.ap.mean(axis=0)
    return np.argsort(-mean_ap, kind="stable"), mean_ap


# ----------------------------------------------------------------------------------------------------- plots


def _plot(result: Result, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    if isinstance(result, ProposalResult):
        paths.append(_plot_recall(plt, result, out / "ar_vs_an.png"))
        return paths
    tasks = result.tasks if isinstance(result, EK100DetectionResult) else {"mAP": result}
    paths.append(_plot_map(plt, result.tiou_thresholds, tasks, out / "map_vs_tiou.png"))
    for name, task in tasks.items():
        suffix = "" if isinstance(result, DetectionResult) else f"_{name}"
        label = "" if isinstance(result, DetectionResult) else f"{name} "
        paths.append(_plot_classes(plt, task, label, out / f"per_class_ap{suffix}.png"))
    return paths


def _plot_map(plt, thresholds: np.ndarray, tasks: dict[str, DetectionResult], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, task in tasks.items():
        mAP = task.mAP * 100
        line, = ax.plot(thresholds, mAP, marker="o", label=f"{name} (average {task.average_mAP * 100:.2f}%)")
        ax.axhline(task.average_mAP * 100, color=line.get_color(), linestyle="--", linewidth=0.8)
        for x, y in zip(thresholds, mAP) if len(tasks) == 1 else ():
            ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    ax.set_xlabel("tIoU threshold")
    ax.set_ylabel("mAP (%)")
    ax.set_xticks(thresholds)
    ax.set_xticklabels([f"{t:.2f}" for t in thresholds])
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    ax.set_title("Detection mAP vs tIoU threshold (dashed: average over thresholds)")
    return _save(plt, fig, path)


def _plot_classes(plt, result: DetectionResult, label: str, path: Path) -> Path:
    """Per-class AP bars (all classes, or the best and worst when there are many, over a histogram of all)."""
    order, mean_ap = _classes_by_ap(result)
    n = len(order)
    half = MAX_BARS // 2
    many = n > MAX_BARS
    shown = np.concatenate([order[:half], order[-half:]]) if many else order
    height = 1.5 + 0.22 * len(shown)
    if many:
        fig, (hist, ax) = plt.subplots(2, 1, figsize=(8, height + 2.5), gridspec_kw={"height_ratios": [2.5, height]})
        hist.hist(mean_ap * 100, bins=np.linspace(0, 100, 21), color="tab:blue", edgecolor="white")
        hist.set_xlim(0, 100)
        hist.set_xlabel("AP averaged over tIoU thresholds (%)")
        hist.set_ylabel("classes")
        hist.set_title(f"Per-class {label}AP: distribution over all {n} classes")
    else:
        fig, ax = plt.subplots(figsize=(8, height))
    y = np.arange(len(shown))[::-1]
    colors = ["tab:green"] * half + ["tab:red"] * half if many else ["tab:blue"] * n
    bars = ax.barh(y, mean_ap[shown] * 100, color=colors)
    ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=2)
    ax.set_yticks(y)
    ax.set_yticklabels([result.classes[c] for c in shown], fontsize=7)
    ax.axvline(result.average_mAP * 100, color="black", linestyle="--", linewidth=0.8,
               label=f"mean {result.average_mAP * 100:.2f}%")
    ax.set_xlim(0, 105)
    ax.set_xlabel("AP averaged over tIoU thresholds (%)")
    if many:
        ax.set_title(f"best {half} (green) and worst {half} (red) of {n} classes")
        ax.axhline(y[half] + 0.5, color="grey", linewidth=0.8)
    else:
        ax.set_title(f"Per-class {label}AP, {n} classes")
    ax.legend(loc="lower right")
    return _save(plt, fig, path)


def _plot_recall(plt, result: ProposalResult, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    an = result.proposals_per_video
    for recall in result.recall:
        ax.plot(an, recall * 100, color="grey", linewidth=0.6, alpha=0.6)
    ax.plot([], [], color="grey", linewidth=0.6, label="recall at each tIoU threshold")
    ax.plot(an, result.avg_recall * 100, color="tab:blue", linewidth=2, label=f"average recall (AUC {result.auc:.2f}%)")
    for k in AR_AT:
        point = (an[k - 1], result.recall_at(k) * 100)
        right = point[0] > 0.8 * an[-1]  # keep the label inside the axes
        ax.plot(*point, "o", color="tab:red")
        ax.annotate(f"AR@{k} {point[1]:.1f}", point, textcoords="offset points", xytext=(-4 if right else 4, -12),
                    ha="right" if right else "left", fontsize=7)
    ax.set_xlabel("average number of proposals per video (AN)")
    ax.set_ylabel("recall (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("Proposal average recall vs average number of proposals")
    return _save(plt, fig, path)


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
