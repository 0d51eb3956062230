"""Splits (DomainBed semantics, recorded by path), the resumable sampler, dataset, loaders."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from align.data.dataset import ImageDataset
from align.data.folder import DataError, DomainFolder, Sample, scan_domainbed
from align.data.loaders import StepBatchSampler, make_eval_loader, make_train_loader
from align.data.splits import make_splits, split_indices, splits_from_record, splits_record
from align.data.transforms import build_transform
from align.hparams import seed_hash


def fake_folder(sizes: dict[str, int], root: Path = Path("/nonexistent")) -> DomainFolder:
    """A DomainFolder without files (splits and samplers never open images)."""
    samples = [
        Sample(f"{d}/c/{i:03d}.jpg", 0, di, None)
        for di, (d, n) in enumerate(sizes.items()) for i in range(n)
    ]
    return DomainFolder(root, None, list(sizes), ["c"], samples)


# ---------------------------------------------------------------------------------------- splits


def test_split_indices_domainbed_semantics():
    in_, out = split_indices(100, 0.2, seed=7)
    assert out == sorted(np.random.RandomState(7).permutation(100)[:20].tolist())  # known answer
    assert len(out) == 20 and len(in_) == 80 and sorted(in_ + out) == list(range(100))
    assert in_ == sorted(in_) and split_indices(100, 0.2, seed=7) == (in_, out)
    assert split_indices(100, 0.2, seed=8) != (in_, out)
    assert split_indices(10, 0.35, seed=0)[1].__len__() == 3  # int(3.5)
    assert split_indices(1, 0.2, seed=0) == ([0], [])  # documented: n == 1 keeps its sample in
    assert split_indices(5, 0.0, seed=0) == ([0, 1, 2, 3, 4], [])


def test_split_indices_errors():
    with pytest.raises(DataError, match="'in' split would be empty"):
        split_indices(0, 0.2, 0)
    with pytest.raises(DataError, match="'out' split would be empty"):
        split_indices(3, 0.2, 0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        split_indices(10, 1.0, 0)


def test_make_splits_per_domain_seeds_and_subsets():
    f = fake_folder({"A": 30, "B": 20})
    s = make_splits(f, 0.2, seed=3)
    a_in, a_out = split_indices(30, 0.2, seed_hash(3, "A"))
    assert s["A"] == {"in": a_in, "out": a_out}
    assert s["B"]["out"] == [30 + i for i in split_indices(20, 0.2, seed_hash(3, "B"))[1]]
    # The split of a domain depends on its name only, not on which other domains are present.
    only_b = fake_folder({"B": 20})
    rec_b = splits_record(only_b, make_splits(only_b, 0.2, seed=3))["B"]
    assert rec_b == splits_record(f, s)["B"]
    with pytest.raises(DataError, match="domain 'B'"):
        make_splits(fake_folder({"A": 30, "B": 2}), 0.2, seed=3)


def test_split_record_roundtrip_and_changed_folder():
    f = fake_folder({"A": 12, "B": 9})
    s = make_splits(f, 0.25, seed=1)
    rec = splits_record(f, s)
    assert rec["A"]["out"][0].startswith("A/c/")
    assert splits_from_record(f, rec) == s
    shrunk = fake_folder({"A": 12, "B": 9})
    gone = shrunk.samples.pop(15)
    with pytest.raises(DataError, match=gone.path):
        splits_from_record(shrunk, rec)
    grown = fake_folder({"A": 13, "B": 9})
    with pytest.raises(DataError, match="A/c/012.jpg"):
        splits_from_record(grown, rec)
    with pytest.raises(DataError, match="unrecorded"):
        splits_from_record(fake_folder({"A": 12, "B": 9, "C": 1}), rec)


# --------------------------------------------------------------------------------------- sampler


def test_sampler_resume_equals_uninterrupted_tail():
    pools = [list(range(0, 7)), list(range(100, 111)), [500, 501]]
    full = list(StepBatchSampler(pools, 4, seed=5, num_steps=40))
    assert len(full) == 40
    tail = list(StepBatchSampler(pools, 4, seed=5, start_step=17, num_steps=23))
    assert tail == full[17:]
    endless = StepBatchSampler(pools, 4, seed=5, start_step=17)
    assert list(islice(iter(endless), 23)) == full[17:]
    assert list(StepBatchSampler(pools, 4, seed=6, num_steps=40)) != full


def test_sampler_domain_balance_epochs_and_aug_seeds():
    pools = [list(range(0, 7)), list(range(100, 111))]
    b = 3
    batches = list(StepBatchSampler(pools, b, seed=0, num_steps=30))
    for batch in batches:
        assert len(batch) == 2 * b
        assert all(i < 7 for i, _ in batch[:b]) and all(100 <= i < 111 for i, _ in batch[b:])
        seeds = [s for _, s in batch]
        assert len(set(seeds)) == len(seeds) and all(0 <= s < 2**63 for s in seeds)
    for d, pool in enumerate(pools):
        stream = [i for batch in batches for i, _ in batch[d * b:(d + 1) * b]]
        n = len(pool)
        epochs = [sorted(stream[k:k + n]) for k in range(0, len(stream) - n + 1, n)]
        assert len(epochs) >= 8 and all(e == pool for e in epochs)  # each epoch visits all once
        assert len({tuple(stream[k:k + n]) for k in range(0, 8 * n, n)}) > 1  # reshuffled
    with pytest.raises(ValueError, match="no samples"):
        StepBatchSampler([[1], []], 2, seed=0)


# -------------------------------------------------------------------------- dataset and loaders


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> DomainFolder:
    root = tmp_path_factory.mktemp("imgs")
    masks = tmp_path_factory.mktemp("masks")
    rng = np.random.default_rng(0)
    for d in ("A", "B"):
        for c in ("x", "y"):
            (root / d / c).mkdir(parents=True)
            (masks / d / c).mkdir(parents=True)
            for i in range(3):
                pixels = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / d / c / f"{i}.png")
                on = rng.integers(0, 2, (20, 24), dtype=np.uint8) * 255
                Image.fromarray(on).save(masks / d / c / f"{i}.png")
    return scan_domainbed(root, masks_root=masks)


def test_dataset_seeded_items_are_pure_and_leave_global_rng_alone(image_folder):
    ds = ImageDataset(image_folder, build_transform(16, train=True), with_masks=True)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b = ds[(4, 99)], ds[(4, 99)]
    assert torch.equal(torch.get_rng_state(), state)
    for k in ("x", "mask", "y", "domain", "index"):
        assert torch.equal(a[k], b[k]), k
    assert a["x"].shape == (3, 16, 16) and a["mask"].shape == (1, 16, 16)
    assert a["y"].dtype == torch.int64 and a["y"].ndim == 0 and int(a["index"]) == 4
    assert int(a["domain"]) == image_folder.samples[4].domain
    assert not torch.equal(ds[(4, 100)]["x"], a["x"])
    ds[4]  # an unseeded item uses (and advances) the global generator
    assert not torch.equal(torch.get_rng_state(), state)
    assert "mask" not in ImageDataset(image_folder, build_transform(16, False), with_masks=False)[0]


def test_dataset_errors_name_files(image_folder, tmp_path):
    f = scan_domainbed(image_folder.root)
    with pytest.raises(DataError, match="without masks_root"):
        ImageDataset(f, build_transform(16, False), with_masks=True)
    broken = DomainFolder(tmp_path, None, ["A"], ["x"], [Sample("A/x/gone.png", 0, 0)])
    with pytest.raises(DataError, match=str(tmp_path / "A/x/gone.png")):
        ImageDataset(broken, build_transform(16, False), with_masks=False)[0]


def _batches(loader, n):
    return [{k: v.clone() for k, v in b.items()} for b in islice(iter(loader), n)]


def test_train_loader_resumes_exactly_and_spares_global_rng(image_folder):
    ds = ImageDataset(image_folder, build_transform(16, train=True), with_masks=True)
    pools = [image_folder.domain_indices(0), image_folder.domain_indices(1)]
    torch.manual_seed(0)
    state = torch.get_rng_state()
    full = _batches(make_train_loader(ds, pools, 2, seed=4), 6)
    assert torch.equal(torch.get_rng_state(), state)
    assert full[0]["x"].shape == (4, 3, 16, 16) and full[0]["mask"].shape == (4, 1, 16, 16)
    assert full[0]["domain"].tolist() == [0, 0, 1, 1]
    torch.manual_seed(999)  # a resumed process is in some other global RNG state
    resumed = _batches(make_train_loader(ds, pools, 2, seed=4, start_step=3), 3)
    for want, got in zip(full[3:], resumed):
        assert all(torch.equal(want[k], got[k]) for k in want)
    workers = _batches(make_train_loader(ds, pools, 2, seed=4, start_step=3, num_workers=2), 3)
    for want, got in zip(full[3:], workers):
        assert all(torch.equal(want[k], got[k]) for k in want)


def test_eval_loader_is_sequential(image_folder):
    ds = ImageDataset(image_folder, build_transform(16, train=False), with_masks=False)
    state = torch.get_rng_state()
    order = [7, 2, 9, 0, 11]
    batches = list(make_eval_loader(ds, order, batch_size=2))
    assert torch.equal(torch.get_rng_state(), state)
    assert [i for b in batches for i in b["index"].tolist()] == order
    again = list(make_eval_loader(ds, order, batch_size=2))
    assert all(torch.equal(a["x"], b["x"]) for a, b in zip(batches, again))
