"""scripts/gpu_check.sh on a machine without a GPU: the comparison helper, the no-CUDA refusal, the CPU dry run."""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tal_common.h5 import ClipTiming, FeatureFileError, write_video

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
gpu_check = sys.modules["gpu_check"] = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(gpu_check)

TIMING = ClipTiming(30.0, 90, 3.0, 30.0, 8, 8, 16, 1.0, 0.5333)


def feature_file(path: Path, videos: dict) -> Path:
    with h5py.File(path, "w") as f:
        for vid, feats in videos.items():
            write_video(f, vid, feats.astype(np.float32), TIMING)
    return path


def test_compare_features_against_a_plain_computation(tmp_path):
    rng = np.random.default_rng(0)
    a = {"v1": rng.normal(size=(3, 16)), "v2": rng.normal(size=(2, 16))}
    b = {k: v + rng.normal(scale=0.01, size=v.shape) for k, v in a.items()}
    b["v2"][1, 5] += 0.5
    ref = feature_file(tmp_path / "a.h5", a)
    cand = feature_file(tmp_path / "b.h5", {**b, "extra": rng.normal(size=(1, 16))})
    c = gpu_check.compare_features(ref, cand)

    a32 = {k: v.astype(np.float32).astype(np.float64) for k, v in a.items()}
    b32 = {k: v.astype(np.float32).astype(np.float64) for k, v in b.items()}
    diffs = [np.abs(a32[k] - b32[k]).max() for k in a]
    cosines = [np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y)) for k in a for x, y in zip(a32[k], b32[k])]
    assert (c.videos, c.clips) == (2, 5)
    assert c.max_abs_diff == pytest.approx(max(diffs), rel=1e-12)
    assert c.scale == pytest.approx(max(np.abs(v).max() for v in a32.values()), rel=1e-12)
    assert c.min_cosine == pytest.approx(min(cosines), rel=1e-12)
    assert c.rel == pytest.approx(c.max_abs_diff / c.scale)
    assert not c.within(gpu_check.BF16_TOLERANCE)  # 0.5 on a scale of about 3 is beyond bf16
    assert gpu_check.compare_features(ref, ref).within(gpu_check.Tolerance(rel=0.0, min_cosine=1.0 - 1e-12))

    b["v2"][1, 5] -= 0.5
    close = feature_file(tmp_path / "c.h5", b)
    assert gpu_check.compare_features(ref, close).within(gpu_check.BF16_TOLERANCE)


def test_compare_features_names_missing_and_mis_shaped_videos(tmp_path):
    ref = feature_file(tmp_path / "a.h5", {"v1": np.ones((3, 4)), "v2": np.ones((2, 4))})
    with pytest.raises(FeatureFileError, match=r"b\.h5: video 'v2' of .*a\.h5 is missing"):
        gpu_check.compare_features(ref, feature_file(tmp_path / "b.h5", {"v1": np.ones((3, 4))}))
    with pytest.raises(FeatureFileError, match=r"video 'v2': .*\(2, 4\).*\(2, 8\)"):
        gpu_check.compare_features(ref, feature_file(tmp_path / "c.h5", {"v1": np.ones((3, 4)), "v2": np.ones((2, 8))}))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_it_refuses_and_points_to_the_dry_run(capsys):
    assert gpu_check.main(["--work-dir", "unused"]) == 2
    assert "--cpu-dry-run" in capsys.readouterr().err


def test_cpu_dry_run_of_the_shell_script(tmp_path):
    env = {**os.environ, "TADALOC_PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(ROOT / "scripts" / "gpu_check.sh"), "--cpu-dry-run", "--work-dir", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[-1].startswith("gpu_check: passed")
    table = {line.split("  ")[0]: line.split() for line in lines if line.startswith(("cpu ", "torchrun "))}
    assert set(table) == {"cpu fp32 (reference)", "cpu fp32", "cpu bf16", "torchrun 2 ranks bf16"}
    for name in ("cpu fp32", "cpu bf16", "torchrun 2 ranks bf16"):
        assert table[name][len(name.split())] == "0"  # rc
    assert "torchrun vs one process (bf16): max|diff| 0 over" in done.stdout
    assert sorted(p.name for p in (tmp_path / "features").glob("*.h5")) == [
        "cpu_fp32.h5", "cuda_bf16.h5", "cuda_fp32.h5", "torchrun2_bf16.h5"]


def test_a_result_beyond_tolerance_fails_the_check(tmp_path, monkeypatch, capsys):
    """With a zero tolerance the dry run's bf16 results (which differ from fp32) must fail it, loudly."""
    monkeypatch.setattr(gpu_check, "BF16_TOLERANCE", gpu_check.Tolerance(rel=0.0, min_cosine=1.0))
    plan = gpu_check.Plan(gpu_check.DRY_RUN.videos[:2], gpu_check.DRY_RUN.reference_videos[:1],
                          gpu_check.DRY_RUN.overrides, "cpu")
    assert gpu_check.check(plan, tmp_path) == 1
    out = capsys.readouterr().out
    assert "cpu bf16" in out and "BEYOND bf16 TOLERANCE" in out and out.splitlines()[-1].startswith("gpu_check: FAILED")
    assert re.search(r"\n  cpu fp32 +2 clips  max\|diff\| 0 ", out)  # fp32 on the CPU equals the reference
