"""The README's "First hour" and "Your own data" sections, run as written.

Every ```bash block of the two sections runs in bash (errexit, nounset) in one temporary folder, with this
checkout's console scripts (setup.cfg's entry points, as small launchers of this interpreter) first on the PATH,
so a README command that breaks, or a tool it names that is not installed, fails here. Between the two sections
the test puts in place what a user brings: ``my_videos/`` (the demo videos) and ``labels.csv`` (their annotations
written in the README's CSV layout), and checks that ``tal-annotations from-csv`` gave back those annotations.

With ``TADALOC_README_INSTALLED=1`` the tools are taken from the PATH as installed (``scripts/check_wheel.sh``
runs this test so with a freshly installed wheel), without launchers and without the checkout on PYTHONPATH.
"""
from __future__ import annotations

import configparser
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_blocks(title: str) -> list[str]:
    """The ```bash blocks of the README section ``## title`` (up to the next ``## `` heading)."""
    text = (ROOT / "README.md").read_text()
    section = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, f"README has no section '## {title}'"
    blocks = re.findall(r"^```bash\n(.*?)^```", section.group(1), re.S | re.M)
    assert blocks, f"README section '## {title}' has no bash block"
    return blocks


def _launchers(folder: Path) -> None:
    """One executable per console script of setup.cfg, running this checkout's code with this interpreter."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    folder.mkdir()
    for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines():
        name, target = (part.strip() for part in line.split("="))
        module, func = target.split(":")
        path = folder / name
        path.write_text(f"#!{sys.executable}\nimport sys\nfrom {module} import {func}\nsys.exit({func}())\n")
        path.chmod(0o755)


def _run(block: str, cwd: Path, env: dict[str, str]) -> None:
    done = subprocess.run(["bash", "-eu", "-c", block], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"README block failed (exit {done.returncode}):\n{block}\n{done.stderr[-4000:]}"


def _write_labels(database: dict, path: Path) -> None:
    """The demo annotations as a user's labels.csv: video,start,end,label,subset (seconds)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "start", "end", "label", "subset"])
        for vid, entry in database.items():
            for ann in entry["annotations"]:
                writer.writerow([vid, ann["segment"][0], ann["segment"][1], ann["label"], entry["subset"]])


def test_first_hour_and_your_own_data_run_as_written(tmp_path):
    if os.environ.get("TADALOC_README_INSTALLED"):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    else:
        _launchers(tmp_path / "bin")
        env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    work = tmp_path / "work"
    work.mkdir()

    for block in readme_blocks("First hour"):
        _run(block, work, env)
    report = json.loads((work / "reports/demo/report.json").read_text())
    assert report["average_mAP"] > 20, report["average_mAP"]  # a random baseline scores < 1 here
    assert (work / "runs/demo/checkpoints/best.pt").is_file() and (work / "reports/demo/report.md").is_file()

    demo = json.loads((work / "demo_data/annotations/hacs.json").read_text())["database"]
    (work / "my_videos").mkdir()
    for video in sorted((work / "demo_data/videos").glob("*.mp4")):
        (work / "my_videos" / video.name).symlink_to(video)
    _write_labels(demo, work / "labels.csv")
    for block in readme_blocks("Your own data"):
        _run(block, work, env)
    mine = json.loads((work / "my_annotations.json").read_text())["database"]
    assert list(mine) == list(demo)
    for vid, entry in demo.items():
        assert mine[vid]["subset"] == entry["subset"] and mine[vid]["annotations"] == entry["annotations"], vid
        assert abs(mine[vid]["duration"] - float(entry["duration"])) < 1e-3, vid  # decoded duration of the video
    report = json.loads((work / "reports/mine/report.json").read_text())
    assert report["average_mAP"] > 20, report["average_mAP"]
