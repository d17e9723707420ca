"""Dataset protocols: ``TASKS`` maps ``data.task`` names to task classes (a new protocol is one module plus one entry)."""
from __future__ import annotations

from localization.config import LocalizeConfig
from localization.tasks.activitynet import ActivityNetTask
from localization.tasks.base import Task, Vocabulary, WindowOutput
from localization.tasks.ek100 import Ek100SlidingTask, Ek100Task
from localization.tasks.thumos14 import Thumos14Task

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (ActivityNetTask, Ek100Task, Ek100SlidingTask, Thumos14Task)}


def make_task(cfg: LocalizeConfig) -> Task:
    """The task named by ``cfg.data.task``."""
    return TASKS[cfg.data.task](cfg)


__all__ = ["TASKS", "Task", "Vocabulary", "WindowOutput", "make_task"]
