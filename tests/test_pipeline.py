"""ExtractStep: a CUDA out-of-memory error halves the model batch and retries (injected on CPU); the model always
sees full batches, so a clip's features do not depend on how decoding grouped the clips."""
import numpy as np
import torch
from tqdm import tqdm

from feature_extraction.config import ExtractConfig, make_sampler, preset_path, resolve_config
from feature_extraction.dataset import ClipBatch, VideoWork
from feature_extraction.pipeline import ExtractStep, make_transform
from feature_extraction.video import VideoInfo
from tal_common.config import load_config
from tal_common.h5 import FeatureReader


class OutOfMemoryAbove(torch.nn.Module):
    """Per-clip channel means; raises CUDA's out-of-memory error for batches larger than ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(x))
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x.mean(dim=(2, 3, 4))


def test_out_of_memory_halves_the_batch_and_says_so_once(tmp_path, capsys):
    cfg = resolve_config(load_config(ExtractConfig, None, ["preprocess.crops=3", "preprocess.short_side=16",
                                                           "preprocess.crop_size=16"], base=preset_path("demo")), cuda=False)
    model = OutOfMemoryAbove(limit=6)  # 6 rows = 2 clips x 3 crops
    step = ExtractStep(model, make_transform(cfg, torch.device("cpu")), cfg, make_sampler(cfg), tmp_path, torch.device("cpu"))
    chunks = [torch.randint(0, 256, (n, 8, 16, 20, 3), dtype=torch.uint8) for n in (4, 3)]
    feats = step.forward(chunks)
    x = torch.cat([make_transform(cfg, torch.device("cpu"))(c) for c in chunks])
    np.testing.assert_allclose(feats, x.mean(dim=(2, 3, 4)).reshape(7, -1).numpy(), atol=1e-6)
    assert model.sizes[:3] == [21, 9, 3]  # 7 clips fail, 3 clips (21 // 2 rounded to whole clips) fail, 1 clip fits
    assert step.max_batch == 3
    again = step.forward(chunks[:1])  # the smaller batch is kept: no new failure
    assert again.shape == (4, 9) and max(model.sizes[len(model.sizes) - 4:]) == 3
    err = capsys.readouterr().err
    assert err.count("out of memory") == 1 and "halving the model batch" in err


class BatchSizeProbe(torch.nn.Module):
    """Per-clip channel means, plus one column holding the size of the batch the clip was computed in."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(x))
        return torch.cat([x.mean(dim=(2, 3, 4)), torch.full((len(x), 1), float(len(x)))], dim=1)


def test_the_model_always_sees_full_batches_whatever_the_decoded_batches(tmp_path):
    """Decoded batches of 3, 3, 3 and 1 clips reach the model as 4, 4 and 4 (2 clips + 2 zero pads)."""
    cfg = resolve_config(load_config(ExtractConfig, None, ["preprocess.short_side=16", "preprocess.crop_size=16",
                                                           "run.batch_size=4"], base=preset_path("demo")), cuda=False)
    sampler = make_sampler(cfg)
    device = torch.device("cpu")
    work = [VideoWork(vid, tmp_path / f"{vid}.mp4", VideoInfo(frames, 15.0, frames / 15, 20, 16), sampler.num_clips(frames / 15))
            for vid, frames in (("a", 64), ("b", 32))]
    assert [w.num_clips for w in work] == [7, 3]
    model = BatchSizeProbe()
    step = ExtractStep(model, make_transform(cfg, device), cfg, sampler, tmp_path, device)
    step.bar = tqdm(disable=True)
    step.start(work)
    rng = torch.Generator().manual_seed(0)
    clips = {(v, c): torch.randint(0, 256, (8, 16, 20, 3), dtype=torch.uint8, generator=rng)
             for v, w in enumerate(work) for c in range(w.num_clips)}
    decoded = [[(0, 0, 3)], [(0, 3, 1), (1, 0, 2)], [(0, 4, 3)], [(1, 2, 1)]]  # (video, first clip, clips) per chunk
    for chunks in decoded:
        step(ClipBatch(
            frames=[torch.stack([clips[v, c] for c in range(first, first + n)]) for v, first, n in chunks],
            video_index=torch.tensor([v for v, _, n in chunks for _ in range(n)]),
            clip_index=torch.tensor([c for _, first, n in chunks for c in range(first, first + n)]),
            failures=[],
        ))
    step.flush()
    assert model.sizes == [4, 4, 4]
    transform = make_transform(cfg, device)
    for v, w in enumerate(work):
        got, _ = FeatureReader(tmp_path / f"{w.video_id}.h5").read(w.video_id)
        want = np.stack([transform(clips[v, c][None]).mean(dim=(2, 3, 4))[0].numpy() for c in range(w.num_clips)])
        np.testing.assert_allclose(got[:, :-1], want, atol=1e-6)
        np.testing.assert_array_equal(got[:, -1], 4.0)
