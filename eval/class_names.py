"""EK100 class names for reports, from the class tables ``EPIC_100_verb_classes.csv`` / ``EPIC_100_noun_classes.csv``.

The tables are given explicitly or found beside the ground-truth CSV (as the annotation repository ships them);
without them reports show the numeric ids. Names are keyed as the reports key classes (:func:`eval.matching.class_key`):
``"3"`` for verb/noun 3, ``"3,12"`` for an action.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from tal_common.annotations import read_ek100_classes

TABLE_FILES = {"verb": "EPIC_100_verb_classes.csv", "noun": "EPIC_100_noun_classes.csv"}


@dataclass(frozen=True)
class ClassNames:
    """Display names per labelling (``verb``, ``noun``, ``action``) and where each table was read from."""

    names: dict[str, dict[str, str]]
    sources: dict[str, str]  # "verb"/"noun" -> "PATH (given)" or "PATH (found beside the ground truth)"

    def describe(self) -> str:
        """One line saying which tables named the classes (or that ids are shown)."""
        if not self.sources:
            return "no EK100 class tables given or beside the ground truth: classes are shown as ids"
        missing = [task for task in TABLE_FILES if task not in self.sources]
        said = "; ".join(f"{task} names from {source}" for task, source in self.sources.items())
        return said + "".join(f"; {task} classes shown as ids (no {TABLE_FILES[task]})" for task in missing)


def ek100_class_names(ground_truth: Path, verb_classes: Path | None = None, noun_classes: Path | None = None) -> ClassNames:
    """The names of ``--verb-classes`` / ``--noun-classes``, else of the tables beside ``ground_truth``.

    An unreadable or malformed table is an :class:`~tal_common.annotations.AnnotationError` naming the file.
    """
    given = {"verb": verb_classes, "noun": noun_classes}
    tables: dict[str, list[str]] = {}
    sources: dict[str, str] = {}
    for task, path in given.items():
        beside = Path(ground_truth).parent / TABLE_FILES[task]
        if path is not None:
            tables[task], sources[task] = read_ek100_classes(path), f"{path} (given)"
        elif beside.is_file():
            tables[task], sources[task] = read_ek100_classes(beside), f"{beside} (found beside the ground truth)"
    names = {task: {str(i): key for i, key in enumerate(keys)} for task, keys in tables.items()}
    if "verb" in tables and "noun" in tables:
        names["action"] = {f"{v},{n}": f"{verb} {noun}" for v, verb in enumerate(tables["verb"])
                           for n, noun in enumerate(tables["noun"])}
    return ClassNames(names, sources)


def display_name(key: str, names: Mapping[str, str]) -> str:
    """``key`` with its display name when ``names`` has one (``"take (0)"``), else ``key``."""
    name = names.get(key)
    return f"{name} ({key})" if name is not None else key
