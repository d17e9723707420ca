"""Reports of an evaluation: ``report.json`` (every number, percent), ``report.md`` (tables), PNG plots, and the
same table as text for stdout.

Numbers are in percent like the field's tables; the JSON keeps full precision, the tables print two decimals.
Plots use matplotlib's Agg backend (no display) and carry their own titles, axis labels and legends.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Mapping, Union

import numpy as np

from eval.detection import DetectionResult, EK100DetectionResult
from eval.diagnose import ERROR_NAMES, ERROR_TYPES, Diagnosis
from eval.class_names import display_name
from eval.matching import Matching
from eval.proposals import AR_AT, ProposalResult

Result = Union[DetectionResult, EK100DetectionResult, ProposalResult]
N_EXTREME_CLASSES = 5  # best / worst classes listed in report.md
MAX_BARS = 40  # per-class plot: all classes up to this many, else the best and worst half each
MAX_LISTED = 20  # report.md: classes listed per unmatched-class table
Names = Mapping[str, Mapping[str, str]]  # labelling ("label", "verb", ...) -> class key -> display name


def write_report(
    result: Result,
    out_dir: str | Path,
    meta: dict,
    *,
    matching: Matching | None = None,
    diagnosis: Mapping[str, Diagnosis] | None = None,
    class_names: Names | None = None,
) -> dict:
    """Publish ``report.json``, ``report.md`` and the plots as the folder ``out_dir``; return the JSON dict.

    ``meta`` (dataset, task, input paths, ...) is stored under ``"meta"`` and heads the Markdown; ``matching``
    (what found no counterpart, by video and by class) under ``"matching"``; ``class_names`` (EK100 class
    tables) name the classes in report.md and the per-class plots (report.json keeps the ids); ``diagnosis``
    (task name, ``""`` for HACS/ActivityNet, -> :class:`~eval.diagnose.Diagnosis`) under ``"diagnosis"``
    with its own sections and plots. The folder is written under a temporary name and renamed into place, so
    a killed run leaves the previous report or this one, never a mix.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: --out must be a folder, and this is a file")
    names = class_names or {}
    report = {**result.to_dict(), "meta": meta}
    if matching is not None:
        report["matching"] = matching.to_dict()
    if diagnosis:
        report["diagnosis"] = {name: d.to_dict() for name, d in diagnosis.items()}
        if list(diagnosis) == [""]:
            report["diagnosis"] = report["diagnosis"][""]
    _remove_stale(out)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        (tmp / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        plots = _plot(result, tmp, names)
        lines = [f"# {_title(result)}", ""]
        lines += [f"- {k}: `{v}`" for k, v in meta.items()] + [""]
        lines += [format_table(result), ""]
        lines += _markdown_details(result, names)
        if matching is not None:
            lines += _matching_markdown(matching, names)
        if diagnosis:
            lines += _diagnosis_markdown(diagnosis)
            plots += _plot_diagnosis(diagnosis, tmp)
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
        (tmp / "report.md").write_text("\n".join(lines))
        _publish_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _publish_folder(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` folder to ``out``; a previous ``out`` is moved aside first, then removed."""
    old = out.with_name(f".{out.name}.old{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    fd = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale(out: Path) -> None:
    """Remove the temporary and set-aside folders that killed runs on ``out`` left (their process is gone)."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(?:tmp|old)(\d+)")
    for stale in out.parent.glob(f".{out.name}.*"):
        found = pattern.fullmatch(stale.name)
        if found and not _alive(int(found.group(1))):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def _markdown_details(result: Result, names: Names) -> list[str]:
    if isinstance(result, ProposalResult):
        return ["## Counts", ""] + _count_lines(result.counts)
    tasks = result.tasks if isinstance(result, EK100DetectionResult) else {"label": result}
    lines = []
    for name, task in tasks.items():
        prefix = "" if name == "label" else f"{name}: "
        order, mean_ap = _classes_by_ap(task)
        n_best = min(N_EXTREME_CLASSES, (len(order) + 1) // 2)
        n_worst = min(N_EXTREME_CLASSES, len(order) - n_best)  # disjoint from the best
        shown = names.get(name, {})
        for heading, picked in (("Best", order[:n_best]), ("Worst", order[::-1][:n_worst])):
            lines += [f"## {prefix}{heading} classes (AP averaged over tIoU)", ""]
            rows = [(display_name(task.classes[c], shown), f"{mean_ap[c] * 100:.2f}") for c in picked]
            lines += [_table(("class", "AP (%)"), rows), ""]
        lines += [f"## {prefix}Counts", ""] + _count_lines(task.counts)
    return lines


def _matching_markdown(matching: Matching, names: Names) -> list[str]:
    """The matching section: counts by video, then per labelling the unscored labels and unpredicted classes."""
    by_video = {k: v for k, v in matching.to_dict().items() if k != "by_class"}
    lines = ["## Matching of predictions and ground truth", "",
             "By video and by class, before any tIoU: what no counterpart can score.", ""] + _count_lines(by_video)
    for task, m in matching.by_class.items():
        lines += [f"### {'' if task == 'label' else task + ': '}by class", ""]
        lines += _count_lines({k: v for k, v in m.to_dict().items() if not isinstance(v, dict)})
        lines += _class_count_table(m.unknown_labels, ("predicted label, no ground-truth class (not scored)", "predictions"),
                                    names.get(task, {}))
        lines += _class_count_table(m.classes_without_predictions,
                                    ("ground-truth class without predictions (AP 0)", "ground-truth segments"),
                                    names.get(task, {}))
    return lines


def _class_count_table(counts: Mapping[str, int], header: tuple[str, str], names: Mapping[str, str]) -> list[str]:
    if not counts:
        return []
    rows = [(display_name(k, names), str(n)) for k, n in list(counts.items())[:MAX_LISTED]]
    more = len(counts) - MAX_LISTED
    return [_table(header, rows), *([f"... and {more} more (all in report.json)"] if more > 0 else []), ""]


def _count_lines(counts: dict) -> list[str]:
    return [f"- {k.replace('_', ' ')}: {v}" for k, v in counts.items()] + [""]


def _classes_by_ap(result: DetectionResult) -> tuple[np.ndarray, np.ndarray]:
    """Class indices from best to worst AP averaged over thresholds (ties by class order), and those averages."""
    mean_ap = result.ap.mean(axis=0)
    return np.argsort(-mean_ap, kind="stable"), mean_ap


# ----------------------------------------------------------------------------------------------------- plots


def _plot(result: Result, out: Path, names: Names) -> list[Path]:
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
        paths.append(_plot_classes(plt, task, label, names.get(name, {}), out / f"per_class_ap{suffix}.png"))
    return paths


def _plot_map(plt, thresholds: np.ndarray, tasks: dict[str, DetectionResult], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 4.5))
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
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=8)
    ax.set_title("Detection mAP vs tIoU threshold (dashed: average over thresholds)")
    return _save(plt, fig, path)


def _plot_classes(plt, result: DetectionResult, label: str, names: Mapping[str, str], path: Path) -> Path:
    """Per-class AP bars (all classes, or the best and worst when there are many, over a histogram of all);
    classes named by ``names`` where it has them."""
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
    ax.set_yticklabels([display_name(result.classes[c], names) for c in shown], fontsize=7)
    ax.axvline(result.average_mAP * 100, color="black", linestyle="--", linewidth=0.8,
               label=f"mean {result.average_mAP * 100:.2f}%")
    ax.set_xlim(0, 105)
    ax.set_xlabel("AP averaged over tIoU thresholds (%)")
    if many:
        ax.set_title(f"best {half} (green) and worst {half} (red) of {n} classes")
        ax.axhline(y[half] + 0.5, color="grey", linewidth=0.8)
    else:
        ax.set_title(f"Per-class {label}AP, {n} classes")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=8)
    return _save(plt, fig, path)


def _plot_recall(plt, result: ProposalResult, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 4.5))
    an = result.proposals_per_video
    for recall in result.recall:
        ax.plot(an, recall * 100, color="grey", linewidth=0.6, alpha=0.6)
    ax.plot([], [], color="grey", linewidth=0.6, label="recall at each tIoU threshold")
    ax.plot(an, result.avg_recall * 100, color="tab:blue", linewidth=2, label=f"average recall (AUC {result.auc:.2f}%)")
    markers = ("o", "s", "^", "D", "v", "P", "X")
    for k, marker in zip(AR_AT, markers):  # named in the legend: AR@1/5/10 lie too close for labels at the points
        ax.plot(an[k - 1], result.recall_at(k) * 100, marker, color="tab:red", linestyle="none",
                label=f"AR@{k} = {result.recall_at(k) * 100:.1f}%")
    ax.set_xlabel("average number of proposals per video (AN)")
    ax.set_ylabel("recall (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=8)
    ax.set_title("Proposal average recall vs average number of proposals")
    return _save(plt, fig, path)


# ------------------------------------------------------------------------------------------------- diagnosis

DIAGNOSIS_DEFINITIONS = """\
Definitions (DETAD: Alwassel et al., ECCV 2018, code HumamAlwassel/DETAD). Of each class with n_c ground
truths only the 10 n_c best-scored predictions are diagnosed; zero-length ground truth and ground truth longer
than its video are left out. Matching is the official ActivityNet greedy walk at each tIoU threshold t.
AP_N is DETAD's normalised AP: precision as if every class had the average number of ground truths
(precision_N = recall * N_bar / (recall * N_bar + FP)); average-mAP_N averages it over classes and thresholds.
A prediction that matches no ground truth at t is typed by the ground truth of its video (any class) with the
highest tIoU: tIoU >= t: double detection (same label) or wrong label; 0.1 <= tIoU < t: localization error
(same label) or confusion; lower, or no ground truth in the video: background. Group kG holds the predictions
ranked (k-1) n_c to k n_c in their class; shares are averaged over thresholds. The gain of an error type is the
average-mAP_N with the predictions of that type removed, minus the base. Characteristics of a ground truth:
coverage = length / video duration, length in seconds, # instances = ground truths of its class in its
video; bins (lo, hi] (the first also takes lo). Sensitivity of a bin: average-mAP_N against the bin's ground
truth only, leaving out predictions matched to ground truth outside it, averaged over the classes present in
the bin. False-negative rate: share of the bin's ground truth no prediction matches, averaged over thresholds.
Bin edges are DETAD's ActivityNet ones for HACS/ActivityNet and its THUMOS14 ones for EK100 (short segments in
long videos); an EK100 video's duration is its last annotated stop time."""


def _diagnosis_markdown(diagnosis: Mapping[str, Diagnosis]) -> list[str]:
    lines = ["## Diagnosis (DETAD)", "", DIAGNOSIS_DEFINITIONS, ""]
    for name, d in diagnosis.items():
        prefix = f"{name}: " if name else ""
        lines += [f"### {prefix}false-positive profile (base average-mAP_N {d.average_mAP_N * 100:.2f}%)", ""]
        header = ("top predictions", "count", *(ERROR_NAMES[e] + " (%)" for e in ERROR_TYPES))
        rows = [(f"{k + 1}G", str(int(n)), *(_fmt(v) for v in row)) for k, (n, row) in
                enumerate(zip(d.fp_group_sizes, d.fp_profile))]
        lines += [_table(header, rows), ""]
        lines += [f"### {prefix}average-mAP_N gain from removing each error type", ""]
        lines += [_table(("error type", "gain (points)"), [(ERROR_NAMES[e], f"{v * 100:.2f}") for e, v in d.mAP_N_gain.items()]), ""]
        lines += [f"### {prefix}sensitivity to ground-truth characteristics", ""]
        rows = [
            (c.title, b, edges, str(int(n)), _fmt(m), _fmt(f))
            for c in d.characteristics
            for b, edges, n, m, f in zip(c.bins, c.bin_edges_text(), d.ground_truth_per_bin[c.name],
                                         d.sensitivity[c.name], d.false_negative_rate[c.name])
        ]
        header = ("characteristic", "bin", "range", "ground truth", "average-mAP_N (%)", "false-negative rate (%)")
        lines += [_table(header, rows), ""]
        lines += [f"### {prefix}diagnosis counts", ""] + _count_lines(d.counts)
    return lines


def _fmt(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{value * 100:.2f}"


DIAGNOSIS_COLORS = ("#33a02c", "#b2df8a", "#1f78b4", "#fb9a99", "#e31a1c", "#a6cee3")  # DETAD's palette


def _plot_diagnosis(diagnosis: Mapping[str, Diagnosis], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, d in diagnosis.items():
        suffix = f"_{name}" if name else ""
        title = f"{name}: " if name else ""
        paths.append(_plot_fp_profile(plt, d, title, out / f"diagnosis_false_positives{suffix}.png"))
        paths.append(_plot_sensitivity(plt, d, title, out / f"diagnosis_sensitivity{suffix}.png"))
    return paths


def _plot_fp_profile(plt, d: Diagnosis, title: str, path: Path) -> Path:
    """Stacked error shares of the 1G..10G groups (legend below), and the gain of removing each error type."""
    fig, (ax, gain_ax) = plt.subplots(1, 2, figsize=(11, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    groups = np.arange(len(d.fp_group_sizes))
    shares = np.nan_to_num(d.fp_profile) * 100
    bottom = np.zeros(len(groups))
    for e, name in enumerate(ERROR_TYPES):
        ax.bar(groups, shares[:, e], bottom=bottom, color=DIAGNOSIS_COLORS[e], label=ERROR_NAMES[name], width=0.8)
        bottom += shares[:, e]
    ax.set_xticks(groups)
    ax.set_xticklabels([f"{k + 1}G\n({int(n)})" for k, n in enumerate(d.fp_group_sizes)], fontsize=7)
    ax.set_xlabel("top predictions, in multiples G of each class's ground truths (count)")
    ax.set_ylabel("share of predictions (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{title}false-positive profile")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, fontsize=8, frameon=False)
    names = list(d.mAP_N_gain)
    gains = np.array([d.mAP_N_gain[n] for n in names]) * 100
    bars = gain_ax.bar(np.arange(len(names)), gains, color=DIAGNOSIS_COLORS[1:])
    gain_ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
    gain_ax.set_xticks(np.arange(len(names)))
    gain_ax.set_xticklabels([ERROR_NAMES[n].replace(" ", "\n") for n in names], fontsize=7)
    gain_ax.set_ylabel("average-mAP_N gain (points)")
    gain_ax.set_ylim(min(0.0, gains.min()) * 1.2, max(gains.max(), 0.1) * 1.25)
    gain_ax.set_title(f"removing each error type (base {d.average_mAP_N * 100:.2f}%)")
    return _save(plt, fig, path)


def _plot_sensitivity(plt, d: Diagnosis, title: str, path: Path) -> Path:
    """Average-mAP_N (top) and false-negative rate (bottom) per bin of each characteristic."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6.5), sharex=True)
    x, ticks, labels, colors = 0, [], [], ("#7fc97f", "#beaed4", "#fdc086")
    for i, c in enumerate(d.characteristics):
        xs = np.arange(x, x + len(c.bins))
        for ax, values in ((top, d.sensitivity[c.name]), (bottom, d.false_negative_rate[c.name])):
            bars = ax.bar(xs, np.nan_to_num(values) * 100, color=colors[i % len(colors)], label=c.title if ax is top else None)
            ax.bar_label(bars, labels=["n/a" if np.isnan(v) else f"{v * 100:.1f}" for v in values], fontsize=7, padding=2)
        ticks += list(xs)
        labels += [f"{b}\n{e}" for b, e in zip(c.bins, c.bin_short_text())]
        if i < len(d.characteristics) - 1:
            for ax in (top, bottom):
                ax.axvline(xs[-1] + 1, color="grey", linestyle=":", linewidth=1)
        x = xs[-1] + 2
    top.axhline(d.average_mAP_N * 100, color="black", linestyle="--", linewidth=0.8, label=f"all ground truth {d.average_mAP_N * 100:.2f}%")
    top.set_ylabel("average-mAP_N (%)")
    top.set_ylim(0, 115)
    top.set_title(f"{title}sensitivity to ground-truth characteristics")
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    bottom.set_ylabel("false-negative rate (%)")
    bottom.set_ylim(0, 115)
    bottom.set_xticks(ticks)
    bottom.set_xticklabels(labels, fontsize=7)
    return _save(plt, fig, path)


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
