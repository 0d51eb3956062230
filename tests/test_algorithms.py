"""Every registered algorithm: the same smoke test; ALIGN's schedule, ablations and eval terms."""

from __future__ import annotations

import math

import pytest
import torch

from align.algorithms import ALGORITHMS, Batch, build_algorithm
from align.algorithms.dre import DRE
from align.errors import ConfigError
from align.training.loop import NonFiniteLoss, train_step

FAST = {"align": {"warmup_steps": 1, "masker_warmup_steps": 1}}


def _batch(seed=0, b=12, size=32, n_classes=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, size, size, generator=g)
    y = torch.arange(b) % n_classes
    mask = torch.zeros(b, 1, size, size)
    mask[..., 8:24, 8:24] = 1.0
    return Batch(x=x, y=y, mask=mask, n_domains=2)


def _build(name, **hp):
    torch.manual_seed(0)
    return build_algorithm(name, backbone="smallcnn", num_classes=3, num_domains=2,
                           hparams={**FAST.get(name, {}), **hp})


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_every_algorithm_trains_every_parameter_without_nan(name):
    algo = _build(name)
    batch = _batch()
    got_grad = {n: False for n, p in algo.named_parameters() if p.requires_grad}
    seen_terms = set()
    for step in range(4):  # covers warm-up, masker warm-up and alternation for ALIGN
        for phase in algo.phases(step):
            terms = algo.losses(phase, batch, step)
            assert "loss" in terms and all(torch.isfinite(t).all() for t in terms.values())
            seen_terms |= {f"{phase}/{k}" for k in terms}
            for opt in algo.optimizers().values():
                opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            for n, p in algo.named_parameters():
                if p.grad is not None and p.grad.abs().sum() > 0:
                    got_grad[n] = True
            algo.optimizers()[phase].step()
    missing = [n for n, ok in got_grad.items() if not ok]
    assert not missing, f"{name}: parameters without gradient: {missing[:5]}"
    assert "classifier/ce" in seen_terms


def test_align_schedule():
    algo = _build("align", warmup_steps=3, masker_warmup_steps=2, masker_every=2)
    got = [tuple(algo.phases(s)) for s in range(9)]
    assert got == [("classifier",)] * 3 + [("masker",)] * 2 + [
        ("masker", "classifier"), ("classifier",), ("masker", "classifier"), ("classifier",)]


@pytest.mark.parametrize("key,value", [("masker_every", 0), ("masker_every", -2),
                                       ("warmup_steps", -1), ("masker_warmup_steps", -1)])
def test_align_schedule_lengths_out_of_range_are_refused_before_training(key, value):
    """masker_every 0 used to pass every check and raise ZeroDivisionError at the first step
    after the warm-ups; negative counts passed silently. Refused by the class, as `check_run`
    asks it before anything is written."""
    cls = ALGORITHMS.get("align")
    with pytest.raises(ConfigError, match=f"'{key}' must be >= "):
        cls.resolve_hparams({key: value})
    assert cls.resolve_hparams({"masker_every": 1, "warmup_steps": 0,
                                "masker_warmup_steps": 0})["masker_every"] == 1


@pytest.mark.parametrize("compare_at", ["cam", "input"])
def test_align_fixed_guidance_leaves_out_samples_whose_mask_is_empty(compare_at):
    """An empty mask carries no annotation (as for HAICS, the same BCE): its sample used to be
    guided towards attending nowhere. Known answer: the BCE of the annotated sample alone."""
    algo = _build("align", guidance="fixed", compare_at=compare_at)
    mask = torch.zeros(2, 1, 32, 32)
    mask[0, :, 8:24, 8:24] = 1.0  # sample 1: empty, no annotation
    batch = Batch(x=torch.zeros(2, 3, 32, 32), y=torch.zeros(2, dtype=torch.long), mask=mask)
    cam = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    _, terms = algo.guidance(batch, cam, step=0)
    alone = Batch(x=batch.x[:1], y=batch.y[:1], mask=mask[:1])
    _, expected = algo.guidance(alone, cam[:1], step=0)
    torch.testing.assert_close(terms["guide"], expected["guide"])
    batch.mask.zero_()
    assert algo.guidance(batch, cam, step=0)[1]["guide"] == 0


def test_align_without_guidance_is_dre():
    batch = _batch()
    a, d = _build("align", guidance="none"), _build("dre")
    assert a.masker is None and list(a.phases(10_000)) == ["classifier"]
    a.load_state_dict(d.state_dict())
    torch.manual_seed(1)
    ta = a.losses("classifier", batch, 10_000)
    torch.manual_seed(1)
    td = d.losses("classifier", batch, 10_000)
    assert set(ta) == set(td) and all(torch.allclose(ta[k], td[k]) for k in ta)


def test_align_fixed_masks_and_no_reg_ablations():
    batch = _batch()
    fixed = _build("align", guidance="fixed", reg_weight=0.0)
    # Asked of the class, without a network (the trainer refuses the run without masks:
    # test_train.py::test_an_algorithm_that_needs_masks_is_refused_without_them).
    assert type(fixed).needs_masks(fixed.hparams) and fixed.masker is None
    assert not ALGORITHMS.get("align").needs_masks()  # the masker makes its own
    terms = fixed.losses("classifier", batch, 0)
    assert "guide" in terms and "reg" not in terms
    torch.testing.assert_close(terms["loss"], terms["ce"] + terms["guide"])


def test_align_guidance_pulls_gradcam_towards_the_mask():
    """Steps on the guidance term alone raise the CAM's agreement with the target mask."""
    algo = _build("align", guidance="fixed", reg_weight=0.0, lr=1e-2)
    batch = _batch()
    opt = algo.optimizers()["classifier"]

    def guide():
        _, cam = algo.clean_pass(batch.x, batch.y, need_cam=True)
        return algo.guidance(batch, cam, 0)[1]["guide"]

    before = guide().item()
    for _ in range(30):
        opt.zero_grad()
        guide().backward()
        opt.step()
    assert guide().item() < 0.7 * before


def test_masker_step_moves_only_the_masker():
    algo = _build("align", warmup_steps=0, masker_warmup_steps=5)
    before = {k: v.clone() for k, v in algo.classifier.state_dict().items()}
    m_before = [p.clone() for p in algo.masker.parameters()]
    terms = train_step(algo, _batch(), 0)
    assert set(terms) >= {"masker/loss", "masker/dist", "masker/sparsity", "masker/smooth"}
    after = algo.classifier.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # incl. BN running stats
    assert any(not torch.equal(a, b) for a, b in zip(m_before, algo.masker.parameters()))


class _HalfMasker(torch.nn.Module):
    """A fixed masker that keeps the top half of every image."""

    def forward(self, x):
        m = torch.zeros(x.shape[0], 1, *x.shape[-2:])
        m[:, :, : x.shape[-2] // 2] = 1
        return m


class _MeanClassifier(torch.nn.Module):
    """Fixed 3-class logits [0, k * mean(x), 0]: class 1 is more likely the brighter the image."""

    def __init__(self, k=4.0):
        super().__init__()
        self.k = k

    def forward(self, x):
        s = self.k * x.mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(s), s, torch.zeros_like(s)], dim=1)


def test_masker_objective_known_answer():
    """L_mask = MSE(p_y(x*M) - p_y(x*(1-M)), 1) + l1 * mean|M| + l2 * TV(M), by hand."""
    algo = _build("align", sparsity_weight=0.2, smooth_weight=0.05, fill="zero")
    algo.masker, algo.classifier = _HalfMasker(), _MeanClassifier(k=4.0)
    x = torch.zeros(2, 3, 8, 8)
    x[:, :, :4] = 1.0  # the bright half is exactly the half the masker keeps
    batch = Batch(x=x, y=torch.tensor([1, 1]))
    terms = algo.masker_losses(batch)
    # kept image: mean 0.5, logit 2 -> p = e^2 / (e^2 + 2); removed image: all zero -> p = 1/3
    dist = math.exp(2) / (math.exp(2) + 2) - 1 / 3
    l_dist = (dist - 1) ** 2
    sparsity = 0.5  # half the pixels on
    smooth = 1 / 7  # one change among 7 vertical neighbour pairs per column, none horizontally
    assert terms["dist"].item() == pytest.approx(l_dist, rel=1e-6)
    assert terms["sparsity"].item() == pytest.approx(sparsity)
    assert terms["smooth"].item() == pytest.approx(smooth, rel=1e-6)
    assert terms["loss"].item() == pytest.approx(l_dist + 0.2 * sparsity + 0.05 * smooth, rel=1e-6)


def test_masker_recovers_the_region_a_fixed_classifier_reads_within_the_quickstart_budget():
    """Known answer for the masker's convergence (issue 12, item 4): with no annotation, L_mask
    alone drives the masker, at its default hyperparameters, onto exactly the evidence a fixed
    classifier reads, within the quickstart's masker-only budget (the masker warm-up before
    guidance starts), at the quickstart's image size and batch size.

    The classifier decides from the sign of a fixed off-centre rectangle (31% of the image);
    everything else is noise it ignores.
    """
    from align.quickstart import QUICKSTART_SETTINGS, quickstart_hparams

    size, n = QUICKSTART_SETTINGS["image_size"], 3 * QUICKSTART_SETTINGS["batch_size"]
    budget = quickstart_hparams("align", QUICKSTART_SETTINGS["steps"])["masker_warmup_steps"]
    region = torch.zeros(size, size, dtype=torch.bool)
    region[8:40, 16:56] = True

    class RegionClassifier(torch.nn.Module):
        def forward(self, x):
            s = 6.0 * x[:, 0][:, region].mean(dim=1)
            return torch.stack([-s, s, torch.zeros_like(s)], dim=1)

    algo = _build("align", warmup_steps=0, masker_warmup_steps=10_000)  # masker defaults
    algo.optimizers()  # built before the swap: only the masker's is stepped in masker phases
    algo.classifier = RegionClassifier()
    g = torch.Generator().manual_seed(0)
    for step in range(budget):
        y = torch.randint(0, 2, (n,), generator=g)
        x = torch.randn(n, 3, size, size, generator=g)
        signal = (2.0 * y - 1.0)[:, None, None] + 0.3 * x[:, :, region]
        x[:, :, region] = signal
        train_step(algo, Batch(x=x, y=y), step)
    with torch.no_grad():
        m = algo.masker(x)[:, 0]  # [B, H, W]
    pred = m > 0.5
    iou = ((pred & region).sum((1, 2)).float() / (pred | region).sum((1, 2)).float()).mean()
    assert iou >= 0.8, (budget, iou.item(), m[:, region].mean().item(), m[:, ~region].mean().item())


def test_masker_iou_eval_term_known_answer():
    algo = _build("align")
    x = torch.zeros(3, 3, 8, 8)
    gt = torch.zeros(3, 1, 8, 8)
    gt[0, :, :4] = 1  # half the image
    gt[1] = 1  # everything
    # gt[2] empty: no score

    class Half(torch.nn.Module):  # a masker that marks the top half
        def forward(self, x):
            m = torch.zeros(x.shape[0], 1, *x.shape[-2:])
            m[:, :, :4] = 1
            return m

    algo.masker = Half()
    out = algo.eval_terms(x, gt)
    assert out["masker_iou"][0] == 1.0 and out["masker_iou"][1] == 0.5
    assert torch.isnan(out["masker_iou"][2])
    # coverage: all of the top half kept; half of the whole image kept; no region, no score
    assert out["masker_coverage"][0] == 1.0 and out["masker_coverage"][1] == 0.5
    assert torch.isnan(out["masker_coverage"][2])
    assert torch.equal(out["masker_area"], torch.full((3,), 0.5))


def test_nonfinite_term_is_named():
    algo = _build("erm")
    batch = _batch()
    batch.x[0, 0, 0, 0] = float("inf")
    with pytest.raises(NonFiniteLoss, match="step 7: loss term"):
        train_step(algo, batch, 7)


def test_unknown_hyperparameter_is_an_error():
    with pytest.raises(ValueError, match="unknown hyperparameter.*bogus"):
        _build("align", bogus=1)
    with pytest.raises(ValueError, match="guidance 'x'"):
        _build("align", guidance="x")
    assert issubclass(ALGORITHMS.get("align"), DRE)


def test_the_contract_is_enforced_and_the_registry_names_the_classes():
    """`@abstractmethod` works on algorithms (it had no effect on a plain nn.Module): a subclass
    that misses a method of the contract cannot be instantiated."""
    from align.algorithms.base import Algorithm
    from align.algorithms.mask_guided import MaskGuided
    from align.algorithms.res import RES

    class NoLosses(Algorithm):
        pass

    class NoExplanation(MaskGuided):
        pass

    for cls in (NoLosses, NoExplanation, RES):
        with pytest.raises(TypeError, match="abstract"):
            cls(backbone="smallcnn", num_classes=3, num_domains=2)
    for name in ALGORITHMS:
        assert ALGORITHMS.get(name).name == name


def test_frozen_restores_mode_and_gradients_also_after_an_error():
    from align.algorithms.base import frozen

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    net[0].bias.requires_grad_(False)  # a flag of its own: restored as it was, not to True
    x = torch.randn(4, 2, requires_grad=True)
    with frozen(net) as f:
        assert not f.training and not any(p.requires_grad for p in f.parameters())
        out = f(x).sum()
    assert net.training and net[0].weight.requires_grad and not net[0].bias.requires_grad
    out.backward()  # the graph recorded no path to the parameters
    assert net[0].weight.grad is None and x.grad is not None
    with pytest.raises(RuntimeError, match="boom"):
        with frozen(net):
            raise RuntimeError("boom")
    assert net.training and net[0].weight.requires_grad


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_every_algorithm_has_a_generated_hparams_table_in_the_docs(name):
    """(tests/test_docs.py checks each table equals `align hparams NAME`.)"""
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs"
    assert any(f"<!-- hparams:{name} " in f.read_text() for f in docs.glob("*.md")), name
