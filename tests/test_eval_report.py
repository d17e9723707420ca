"""Reports: report.json holds every number (percent), report.md the tables, and the plots are real PNGs."""
import json
from pathlib import Path

import numpy as np
import pytest

from eval.detection import evaluate_detection
from eval.proposals import evaluate_proposals
from eval.report import format_table, write_report

DATA = Path(__file__).parent / "data" / "eval"
PNG = b"\x89PNG\r\n\x1a\n"


def _png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG and path.stat().st_size > 10_000


def test_detection_report(tmp_path):
    result = evaluate_detection(DATA / "anet_val300_gt.json", DATA / "anet_val300_pred_seed11.json")
    report = write_report(result, tmp_path, {"dataset": "activitynet"})
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert set(saved) == {"tiou_thresholds", "mAP", "average_mAP", "per_class_AP", "counts", "meta"}
    assert len(saved["per_class_AP"]) == 156 and saved["average_mAP"] == pytest.approx(41.14458829623436, abs=1e-9)
    assert np.mean(list(saved["per_class_AP"].values()), axis=0) == pytest.approx(saved["mAP"])
    md = (tmp_path / "report.md").read_text()
    table = format_table(result)
    assert table in md and "| 0.50 | 65.60 |" in table and "| **average** | **41.14** |" in table
    best = max(saved["per_class_AP"], key=lambda c: np.mean(saved["per_class_AP"][c]))
    assert "Best classes" in md and "Worst classes" in md and best in md
    assert _png(tmp_path / "map_vs_tiou.png") and _png(tmp_path / "per_class_ap.png")
    assert "![map_vs_tiou](map_vs_tiou.png)" in md


def test_ek100_report(tmp_path):
    result = evaluate_detection(DATA / "ek100_val12.csv", DATA / "ek100_val12_sub_seed11.json", dataset="ek100")
    report = write_report(result, tmp_path, {"dataset": "ek100"})
    assert {"tiou_thresholds", "verb", "noun", "action"} <= set(report)
    assert set(report["action"]) == {"mAP", "average_mAP", "per_class_AP", "counts"}
    assert all(k.count(",") == 1 for k in report["action"]["per_class_AP"])
    assert "| 0.10 | 45.44 | 56.43 | 54.84 |" in format_table(result)
    for name in ("map_vs_tiou", "per_class_ap_verb", "per_class_ap_noun", "per_class_ap_action"):
        assert _png(tmp_path / f"{name}.png")
    assert "predictions unknown label" in (tmp_path / "report.md").read_text()


def test_proposal_report(tmp_path):
    result = evaluate_proposals(DATA / "anet_val300_gt.json", DATA / "anet_val300_proposals_seed11.json")
    report = write_report(result, tmp_path, {"dataset": "activitynet", "task": "proposals"})
    assert {"AUC", "AR@1", "AR@5", "AR@10", "AR@50", "AR@100", "curve"} <= set(report)
    assert report["AR@100"] == report["curve"]["average_recall"][99]
    assert "| AR@100 | 85.19 |" in format_table(result)
    assert _png(tmp_path / "ar_vs_an.png")
