"""Training resume after a kill at any file operation: the final artefacts equal an uninterrupted run bit for bit.

Each epoch's commit is ``last.pt`` (one rename), then ``best.pt`` and ``metrics.jsonl`` derived from it. The test
kills a forked training process inside ``durable_replace`` (the one place a file is published), before and after
the rename, at every call in turn, then reruns the same command with ``--resume`` and compares bytes.
"""
import os
from pathlib import Path

import pytest

from localization import train_cli
from loc_synth import make_hacs
from tal_common import atomic

ROOT = Path(__file__).resolve().parents[1]
CFG = [
    "--config", str(ROOT / "configs/localize/demo_bmn.yaml"), "--set", "data.tscale=16", "--set", "data.dscale=16",
    "--set", "model.num_samples=4", "--set", "model.hidden_dim_1d=16", "--set", "model.hidden_dim_2d=8",
    "--set", "model.hidden_dim_3d=16", "--set", "classifier.hidden_dim=16", "--set", "train.batch_size=2",
    "--set", "train.num_threads=1", "--set", "train.epochs=3", "--set", "train.lr_steps=[1]",
]
ARTEFACTS = ("checkpoints/last.pt", "checkpoints/best.pt", "metrics.jsonl")


def _run(argv: list[str], kill_at: int | None = None) -> int:
    """Run train-localizer in a forked child; with ``kill_at``, the child dies (exit 137) at that file operation:
    odd numbers just before a rename (the temporary file is complete), even numbers just after it."""
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            if kill_at is not None:
                real = atomic.durable_replace
                count = [0]

                def dying_replace(tmp, final):
                    count[0] += 1
                    if count[0] == kill_at:
                        os._exit(137)
                    real(tmp, final)
                    count[0] += 1
                    if count[0] == kill_at:
                        os._exit(137)

                atomic.durable_replace = dying_replace
            code = train_cli.main(argv)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_hacs(tmp_path_factory.mktemp("data"), n_train=6, n_val=2, seed=4)


def test_kill_at_every_file_operation_then_resume_is_bitwise_exact(data, tmp_path):
    h5_path, ann_path = data
    common = [*CFG, "--features", str(h5_path), "--annotations", str(ann_path)]
    reference = tmp_path / "reference"
    assert _run([*common, "--work-dir", str(reference)]) == 0
    want = {name: (reference / name).read_bytes() for name in ARTEFACTS}
    kill_at, killed = 1, 0
    while True:
        work = tmp_path / f"kill{kill_at}"
        code = _run([*common, "--work-dir", str(work)], kill_at=kill_at)
        if code == 0:  # past the last file operation: the enumeration is complete
            break
        assert code == 137, f"kill point {kill_at}: exit status {code}"
        killed += 1
        assert _run([*common, "--work-dir", str(work), "--resume"]) == 0, f"kill point {kill_at}: resume failed"
        for name in ARTEFACTS:
            assert (work / name).read_bytes() == want[name], f"kill point {kill_at}: {name} differs"
        leftovers = [p.name for p in work.rglob(".*tmp*")]
        assert not leftovers, f"kill point {kill_at}: temporary files left: {leftovers}"
        kill_at += 1
    # config.yaml, then per epoch last.pt, best.pt (when improved), metrics.jsonl: 2 kill points each
    assert killed >= 2 * (1 + 3 * 2), killed
