"""Proposal heads: ``HEADS`` maps ``model.head`` names to head classes (a new head is one module plus one entry)."""
from __future__ import annotations

from localization.heads.base import Head, HeadOutputs
from localization.heads.bmn_head import BMNHead

HEADS: dict[str, type[Head]] = {"bmn": BMNHead}

__all__ = ["HEADS", "Head", "HeadOutputs"]
