"""Every Python and shell example of README.md and docs/*.md runs, at tiny scale (issue 10).

Each ```python block and each `align ...` line of a ```bash block has an entry in a table below:
what its working directory must hold first (a tiny synthetic benchmark at `data/synth`, finished
tiny runs at `runs/erm` and `runs/align`, ...) and the few explicit textual substitutions that
shrink it. Every substituted text must be in the doc, so an edit that removes it fails loudly
here instead of silently running the doc's full-size version. A block or command without an entry
fails: a new doc example needs a test. The long experiments (`align quickstart`, `benchmark`,
`mask-quality`, `pretrain`) run as documented, in-process, with their shared settings shrunk
(`tiny_experiments`); the two that still take more than 5 s are marked slow. `align prepare`
downloads small stand-ins of the datasets' archives from a local folder instead of the internet
(`offline_datasets`); the SAM script of docs/masks.md runs with a stand-in `segment_anything`.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from test_docs import README, fenced_blocks, shell_commands, shell_lines

@pytest.fixture(autouse=True)
def _one_thread(_threads):
    """One intra-op thread: these tensors are tiny, and on the shared 2-core machine two threads
    stalled on each other (a one-regime `align benchmark` here: 57 s under load, 6.5 s with one
    thread, measured)."""
    import torch

    torch.set_num_threads(1)
    yield


# --- what an example's working directory holds first ----------------------------------------
# A preparation is a callable (working dir, pytest request) -> names to add to a Python block's
# globals (or None).

Prepare = Callable[[Path, pytest.FixtureRequest], "dict | None"]


def synth_at(where: str, part: str = "") -> Prepare:
    """The tests' tiny synthetic benchmark (or one of its folders, `part`) copied to `where`."""
    def prepare(cwd: Path, request: pytest.FixtureRequest) -> None:
        shutil.copytree(request.getfixturevalue("tiny_synth") / part, cwd / where)
    return prepare


def runs(cwd: Path, request: pytest.FixtureRequest) -> None:
    """Finished 4-step ERM and ALIGN runs at `runs/erm` and `runs/align` (kept if there)."""
    bench = request.getfixturevalue("tiny_bench")
    for algo in ("erm", "align"):
        if not (cwd / "runs" / algo).exists():
            shutil.copytree(bench / "runs" / algo / "test-texture" / "seed0", cwd / "runs" / algo)


def sweep_at(where: str) -> Prepare:
    """A sweep folder written by hand at `where` (`sweep_fakes.golden_sweep`: runs of the three
    protocols with known accuracies, two draws each, one run not finished)."""
    def prepare(cwd: Path, request: pytest.FixtureRequest) -> None:
        from sweep_fakes import golden_sweep

        golden_sweep(cwd / where)
    return prepare


def bench_at(where: str) -> Prepare:
    """A miniature benchmark folder (`data/` and finished runs) at `where`."""
    def prepare(cwd: Path, request: pytest.FixtureRequest) -> None:
        shutil.copytree(request.getfixturevalue("tiny_bench"), cwd / where)
    return prepare


def domainbed_folder(where: str, preset: str) -> Prepare:
    """A tiny folder in the DomainBed layout with a dataset preset's domain and class names:
    4 random 32 px images per class and domain."""
    def prepare(cwd: Path, request: pytest.FixtureRequest) -> None:
        from align.data.presets import get_preset

        rng = np.random.default_rng(0)
        spec = get_preset(preset)
        for domain in spec.domains:
            for cls in spec.classes:
                folder = cwd / where / domain / cls
                folder.mkdir(parents=True)
                for i in range(4):
                    pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                    Image.fromarray(pixels).save(folder / f"{i}.jpg")
    return prepare


#: Every training setting a tiny CPU run needs, for a `--config` file.
TINY_TRAIN = dict(backbone="smallcnn", pretrained=None, image_size=32, batch_size=2,
                  eval_every=2, eval_batch_size=64, num_workers=0, device="cpu")


def config_file(name: str, **hparams) -> Prepare:
    """A config file `name` with the tiny settings (and `hparams`, e.g. ALIGN's short warm-ups)."""
    def prepare(cwd: Path, request: pytest.FixtureRequest) -> None:
        body = {**TINY_TRAIN, **({"hparams": hparams} if hparams else {})}
        (cwd / name).write_text(json.dumps(body))  # JSON is YAML
    return prepare


def readme_yaml_at(name: str, subs: tuple[tuple[str, str], ...]) -> Prepare:
    """The README's example config file, made tiny by `subs`, written to `name`."""
    def prepare(cwd: Path, request: pytest.FixtureRequest) -> None:
        (body,) = [b for doc, b in fenced_blocks("yaml") if doc == README.name]
        (cwd / name).write_text(substitute(body, subs))
    return prepare


def after(line: str) -> Prepare:
    """Another documented command, run (prepared and checked) first in the same directory."""
    def prepare(cwd: Path, request: pytest.FixtureRequest) -> None:
        run_command(line, cwd, request)
    return prepare


def shipped_configs(cwd: Path, request: pytest.FixtureRequest) -> None:
    """The repository's `configs/` (the shipped sweep files), as a clone has it."""
    shutil.copytree(README.parent / "configs", cwd / "configs")


def sweep_file(name: str, **sweep) -> Prepare:
    """A sweep file `name`: the tiny settings, 4 steps, ALIGN's short warm-ups, device auto (a
    pool worker's one GPU, else the CPU) and the `sweep:` section `sweep`."""
    def prepare(cwd: Path, request: pytest.FixtureRequest) -> None:
        body = {**TINY_TRAIN, "device": "auto", "steps": 4, "sweep": sweep,
                "hparams": {f"align.{k}": v for k, v in ALIGN_WARMUPS.items()}}
        (cwd / name).write_text(json.dumps(body))
    return prepare


def swept(args: str) -> Prepare:
    """`align sweep ARGS` run first (local launcher), to finish the sweep a command reads."""
    def prepare(cwd: Path, request: pytest.FixtureRequest) -> None:
        from typer.testing import CliRunner

        from align.cli import app

        result = CliRunner().invoke(app, ["sweep", *shlex.split(args)])
        assert result.exit_code == 0, result.output
    return prepare


def fake_slurm(cwd: Path, request: pytest.FixtureRequest) -> None:
    """Stand-ins for Slurm's `srun` and `sbatch` first on the PATH: sbatch answers as Slurm does
    (job 4242) and runs nothing; submitit writes the real job script."""
    import os

    bin_dir = cwd / ".slurm-bin"
    bin_dir.mkdir()
    for name, body in (("srun", "exit 0"), ("sbatch", "echo Submitted batch job 4242")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    request.getfixturevalue("monkeypatch").setenv("PATH", f"{bin_dir}{os.pathsep}"
                                                          f"{os.environ['PATH']}")


def tiny_pretrain(cwd: Path, request: pytest.FixtureRequest) -> dict:
    return {"TINY_PRETRAIN": TINY_PRETRAIN}


def experiments(cwd: Path, request: pytest.FixtureRequest) -> None:
    request.getfixturevalue("tiny_experiments")


def offline(cwd: Path, request: pytest.FixtureRequest) -> None:
    request.getfixturevalue("offline_datasets")


def archive_at(where: str, name: str) -> Prepare:
    """The small stand-in of source archive `name` copied to `where` (as a user's download)."""
    def prepare(cwd: Path, request: pytest.FixtureRequest) -> None:
        (cwd / where).mkdir(parents=True, exist_ok=True)
        shutil.copy(request.getfixturevalue("offline_datasets") / name, cwd / where / name)
    return prepare


def fake_sam(cwd: Path, request: pytest.FixtureRequest) -> None:
    """`segment_anything` replaced by a stand-in (see `FakeSamGenerator`)."""
    module = types.ModuleType("segment_anything")
    module.sam_model_registry = {"vit_h": lambda checkpoint: FakeSam()}
    module.SamAutomaticMaskGenerator = FakeSamGenerator
    request.getfixturevalue("monkeypatch").setitem(sys.modules, "segment_anything", module)


class FakeSam:
    def to(self, device: str) -> "FakeSam":
        return self


class FakeSamGenerator:
    """SAM's automatic mask generator as docs/masks.md uses it: `generate(image [H, W, 3] uint8)`
    -> a list of {"segmentation": bool [H, W], ...}. Three hand-made segments: a centre square,
    a 3x3 corner blob (touches the border in 6 pixels) and the background around both (all of
    the border). The doc's foreground rule keeps the first two."""

    def __init__(self, sam: FakeSam) -> None:
        self.sam = sam

    @staticmethod
    def segments(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        yy, xx = np.mgrid[:h, :w]
        centre = (abs(yy - h / 2) < h / 4) & (abs(xx - w / 2) < w / 4)
        corner = (yy < 3) & (xx < 3)
        return centre, corner, ~(centre | corner)

    def generate(self, image: np.ndarray) -> list[dict]:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        return [{"segmentation": s, "area": int(s.sum())} for s in self.segments(*image.shape[:2])]


# --- the tiny experiments --------------------------------------------------------------------

def _tiny_pretrain():
    from align.data.upstream import UpstreamConfig
    from align.pretrain import PretrainConfig

    return PretrainConfig(upstream=UpstreamConfig(n_train=24, n_val=12), steps=3, batch_size=8)


TINY_PRETRAIN = _tiny_pretrain()


@pytest.fixture
def tiny_experiments(monkeypatch):
    """The settings every experiment shares, shrunk: a benchmark of 2 domains x 2 classes x 8
    images of 32 px, 4 steps of 2 images per domain (ALIGN's warm-ups scale with the steps), a
    3-step upstream pre-training. The commands then run as documented, grid and all."""
    import align.experiments.mask_quality as mask_quality
    import align.pretrain as pretrain
    import align.regimes as regimes
    from align import quickstart
    from align.data.synthetic import DEFAULT_CONFIG

    synth = dataclasses.replace(DEFAULT_CONFIG, size=32, n_per_domain=16,
                                domains=("photo", "sketch"), classes=("circle", "square"))
    monkeypatch.setattr(regimes, "DEFAULT_CONFIG", synth)  # the regimes' data, the quickstart's
    monkeypatch.setattr(mask_quality, "ensure_data", lambda root, seed, console:
                        quickstart.ensure_data(root, seed, console, synth))
    ensure = pretrain.ensure_pretrained

    def ensure_tiny(out_dir, backbone="smallcnn", image_size=64, seed=0, config=None,
                    progress=None):
        return ensure(out_dir, backbone, image_size, seed, TINY_PRETRAIN, progress)

    monkeypatch.setattr(pretrain, "ensure_pretrained", ensure_tiny)
    monkeypatch.setattr(pretrain, "DEFAULT_PRETRAIN", TINY_PRETRAIN)  # `align pretrain`'s default
    for key, value in dict(TINY_TRAIN, steps=4).items():
        monkeypatch.setitem(quickstart.QUICKSTART_SETTINGS, key, value)


def _domain_zip(path: Path, top: str, counts: dict) -> None:
    """A zip archive holding `top/<domain>/<class>/<i>.jpg` (PACS' `kfold/`, Office-Home's
    `OfficeHomeDataset_10072016/`) with `counts[domain][class]` images."""
    import zipfile

    from test_prepare import _jpeg

    with zipfile.ZipFile(path, "w") as z:
        for domain, per_class in counts.items():
            for cls, n in per_class.items():
                for i in range(n):
                    z.writestr(f"{top}/{domain}/{cls}/{i}.jpg", _jpeg(i + len(cls)))


@pytest.fixture
def offline_datasets(tmp_path, monkeypatch) -> Path:
    """`align prepare` without the internet: small stand-ins of the four datasets' source
    archives (tests/test_prepare.py's builders; 2 images of 4x4 px per domain and class) in a
    folder that `fetch` serves by file name, and presets whose only release has their counts.
    The published checksums cannot match made-up archives, so they are not verified here
    (tests/test_prepare.py tests them). Returns the archives' folder."""
    import align.data.prepare as prepare
    from align.data.presets import PRESETS
    from test_prepare import _counts, _scaled, terra_archives, vlcs_tar

    internet = tmp_path / "internet"
    internet.mkdir()
    counts = {name: _counts(PRESETS[name]) for name in ("vlcs", "pacs", "office_home")}
    vlcs_tar(internet / "VLCS.tar.gz", counts["vlcs"])
    _domain_zip(internet / "PACS.zip", "kfold", counts["pacs"])
    _domain_zip(internet / "office_home.zip", "OfficeHomeDataset_10072016", counts["office_home"])
    *_, counts["terra_incognita"] = terra_archives(internet)
    for name, per_class in counts.items():
        monkeypatch.setitem(PRESETS, name, _scaled(PRESETS[name], per_class))

    def fetch(url: str, dest: Path, **kw) -> Path:
        shutil.copy(internet / Path(dest).name, dest)
        return Path(dest)

    monkeypatch.setattr(prepare, "fetch", fetch)
    monkeypatch.setattr(prepare, "verify_checksum", lambda *a, **kw: None)
    return internet


# --- checks ---------------------------------------------------------------------------------

def _done(run: str, **config) -> Callable[[Path, object], None]:
    """`run` finished, and its config.json has these values (`hparams` compared key by key)."""
    def check(cwd: Path, _) -> None:
        assert (cwd / run / "done").is_file(), f"{run} did not finish"
        saved = json.loads((cwd / run / "config.json").read_text())
        for key, value in config.items():
            got = ({k: saved[key][k] for k in value} if key == "hparams" else saved[key])
            assert got == value, f"{run}: {key} is {got!r}, expected {value!r}"
    return check


def _files(*paths: str) -> Callable[[Path, object], None]:
    def check(cwd: Path, _) -> None:
        for path in paths:
            assert list(cwd.glob(path)), f"{path} was not written"
    return check


def _prepared(folder: str, *sources: str) -> Callable[[Path, object], None]:
    """`folder` was prepared (its record is there), from `sources` (where each archive came from,
    as the start of the record's `from`) when given."""
    def check(cwd: Path, _) -> None:
        record = json.loads((cwd / folder / ".align-prepare.json").read_text())
        got = [s["from"] for s in record["sources"]]
        for source, origin in zip(sources, got):
            assert origin.startswith(source.format(cwd=cwd)), f"{folder}: from {got}"
    return check


def _says(text: str) -> Callable[[Path, str], None]:
    def check(cwd: Path, output: str) -> None:
        assert text in output, output
    return check


def _all(*checks: Callable[[Path, str], None]) -> Callable[[Path, str], None]:
    def check(cwd: Path, output: str) -> None:
        for c in checks:
            c(cwd, output)
    return check


def _message_lines(text: str) -> list[str]:
    """The lines of a quickstart output that are neither table rows nor training or evaluation
    progress: its messages and the tables' titles, stripped."""
    rows = ("┏", "┃", "┡", "│", "└")
    progress = ("erm step ", "align step ", "evaluate ")
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.startswith(rows + progress)]


def _prints_the_readme_quickstart_output(cwd: Path, output: str) -> None:
    """The README's recorded quickstart output has the messages and tables, in order, that the
    quickstart prints (the numbers differ at tiny scale; an earlier README showed a second
    masker IoU table left over from a previous run)."""
    (block,) = [b for doc, b in fenced_blocks("text")
                if doc == README.name and b.startswith("generating the synthetic benchmark")]
    assert _message_lines(block) == _message_lines(output), output


def _submitted(sweep: str, n: int) -> Callable[[Path, str], None]:
    """`n` runs of `sweep` were submitted as one job array, none ran here."""
    def check(cwd: Path, output: str) -> None:
        lines = (cwd / sweep / "slurm" / "submitted.jsonl").read_text().splitlines()
        assert [json.loads(x)["job_id"] for x in lines] == [f"4242_{i}" for i in range(n)]
        assert not list((cwd / sweep).glob("runs/*/*/*/*/config.json"))
    return check


def _sam_masks(cwd: Path, names: dict) -> None:
    """The SAM script wrote one 0/255 PNG per image: the centre square and the corner blob."""
    images = sorted(p.relative_to(cwd / "data/PACS/images")
                    for p in (cwd / "data/PACS/images").glob("*/*/*"))
    masks = sorted(p.relative_to(cwd / "data/PACS/masks_sam")
                   for p in (cwd / "data/PACS/masks_sam").glob("*/*/*"))
    assert images and masks == [p.with_suffix(".png") for p in images]
    for rel in masks:
        mask = Image.open(cwd / "data/PACS/masks_sam" / rel)
        centre, corner, _ = FakeSamGenerator.segments(mask.height, mask.width)
        assert mask.mode == "L"
        assert np.array_equal(np.asarray(mask), (centre | corner).astype(np.uint8) * 255)


def _sam_folder(cwd: Path, names: dict) -> None:
    from align.masks import read_record

    record = read_record(cwd / "data/PACS/masks_sam_checked")
    assert record["source"] == "folder" and record["n_images"] == len(list(
        (cwd / "data/PACS/images").glob("*/*/*")))


def _metrics(cwd: Path, names: dict) -> None:
    agg = names["aggregate"](names["results"])
    assert agg.n_valid + agg.n_excluded == 16 and names["result"].values.shape == (8,)


def _evaluation(cwd: Path, names: dict) -> None:
    assert json.loads((cwd / "runs/align/evaluation.json").read_text())["splits"]


def _collected(cwd: Path, names: dict) -> None:
    assert names["sweep"].n_finished == 27 and len(names["sweep"].missing()) == 2


def _pretrained(cwd: Path, names: dict) -> None:
    assert names["path"].is_file() and names["path"].with_suffix(".json").is_file()


def _synth_generated(cwd: Path, names: dict) -> None:
    assert json.loads((cwd / "data/synth/synth.json").read_text())["seed"] == 0
    assert names["image"].shape == (64, 64, 3) and names["mask"].shape == (64, 64)


def _sheet(cwd: Path, names: dict) -> None:
    assert Image.open(cwd / "synth_sheet.png").size == (8 * 64, 4 * 64)


# --- the Python blocks ------------------------------------------------------------------------

@dataclass(frozen=True)
class Example:
    """How one ```python block of the docs runs.

    Args:
        doc: its file name (README.md or a docs/ file).
        marker: a text that this block, and no other block of the doc, contains.
        prepare: what its working directory holds first (and names it may use).
        subs: (the doc's text, its tiny replacement); each text must be in the block.
        check: (working dir, the block's globals after it ran) -> asserts what it made.
        after: the marker of a block of the same doc that runs first, in the same directory.
        repeat: how often it runs, each time in fresh globals of one interpreter.
    """

    doc: str
    marker: str
    prepare: tuple[Prepare, ...] = ()
    subs: tuple[tuple[str, str], ...] = ()
    check: Callable[[Path, dict], None] | None = None
    after: str | None = None
    repeat: int = 1

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.marker}"


EXAMPLES = [
    # `align.train` is called twice in one interpreter: it must stay the function (issue 10).
    Example(README.name, "align.load_run", prepare=(synth_at("quickstart/data"),),
            subs=(("steps=300", "steps=4"), ("image_size=64", "image_size=32"),
                  ("3, 64, 64", "3, 32, 32")),
            check=_done("runs/erm"), repeat=2),
    Example("masks.md", 'f"{bench}/masks_generic"', prepare=(synth_at("data/synth"),),
            check=_files("data/synth/masks_generic/mask_source.json")),
    Example("masks.md", "np.linspace(1.0, floor, 5)", prepare=(synth_at("data/synth"),),
            check=_files("data/synth/masks_dilate_1.000/mask_source.json",
                         "data/synth/masks_dilate_*/mask_source.json")),
    Example("masks.md", "SamAutomaticMaskGenerator(sam)",
            prepare=(synth_at("data/PACS/images", "images"), fake_sam), check=_sam_masks),
    Example("masks.md", '"data/PACS/masks_sam_checked"', after="SamAutomaticMaskGenerator(sam)",
            check=_sam_folder),
    Example("metrics.md", 'METRICS.get("comprehensiveness")', check=_metrics),
    Example("report.md", "evaluate_run(", prepare=(runs,), check=_evaluation),
    Example("report.md", 'read_sweep("sweeps/toy")', prepare=(sweep_at("sweeps/toy"),),
            check=_collected),
    # Full size: 2,000 images of 64 px in about 3 s.
    Example("synthetic.md", 'generate("data/synth", DEFAULT_CONFIG, seed=0)',
            check=_synth_generated),
    Example("synthetic.md", "synth_sheet.png", check=_sheet),
    Example("synthetic.md", "ensure_pretrained(", prepare=(tiny_pretrain,),
            subs=(("seed=0)", "seed=0, config=TINY_PRETRAIN)"),), check=_pretrained),
]


def substitute(code: str, subs: tuple[tuple[str, str], ...]) -> str:
    for old, new in subs:
        assert old in code, f"the doc no longer contains {old!r}: update this test's substitutions"
        code = code.replace(old, new)
    return code


def python_block(doc: str, marker: str) -> str:
    found = [code for d, code in fenced_blocks("python") if d == doc and marker in code]
    assert len(found) == 1, f"{doc}: {len(found)} python blocks contain {marker!r}, expected 1"
    return found[0]


def run_example(example: Example, cwd: Path, request: pytest.FixtureRequest) -> dict:
    """Prepare `cwd` (the current directory), run the block; returns its globals."""
    if example.after:
        (first,) = [e for e in EXAMPLES if e.doc == example.doc and e.marker == example.after]
        run_example(first, cwd, request)
    names: dict = {}
    for prepare in example.prepare:
        names.update(prepare(cwd, request) or {})
    code = compile(substitute(python_block(example.doc, example.marker), example.subs),
                   example.doc, "exec")
    for _ in range(example.repeat):
        run_globals = {"__name__": "__main__", **names}
        exec(code, run_globals)
    if example.check:
        example.check(cwd, run_globals)
    return run_globals


@pytest.mark.parametrize("example", [pytest.param(e, id=e.id) for e in EXAMPLES])
def test_python_example_runs(example, tmp_path, monkeypatch, request):
    monkeypatch.chdir(tmp_path)
    run_example(example, tmp_path, request)


def test_every_python_block_has_a_test():
    for doc, code in fenced_blocks("python"):
        entries = [e for e in EXAMPLES if e.doc == doc and e.marker in code]
        assert entries, (f"{doc}: new doc example with no test (add it to EXAMPLES in "
                         f"tests/test_doc_examples.py):\n{code}")
        assert len(entries) == 1, f"{doc}: {[e.marker for e in entries]} all match one block"
    for e in EXAMPLES:
        python_block(e.doc, e.marker)  # exactly one block per entry


# --- the shell commands -----------------------------------------------------------------------

@dataclass(frozen=True)
class Command:
    """How one documented `align ...` command line runs (in-process, through the CLI).

    Args:
        prepare: what its working directory holds first.
        subs: (the command's text, its tiny replacement); each text must be in the line.
        check: (working dir, the command's output) -> asserts what it made.
        slow: marks the test slow.
    """

    prepare: tuple[Prepare, ...] = ()
    subs: tuple[tuple[str, str], ...] = ()
    check: Callable[[Path, str], None] | None = None
    slow: bool = False


ALIGN_WARMUPS = dict(warmup_steps=2, masker_warmup_steps=1)  # guidance from step 3 of 4

COMMANDS: dict[str, Command] = {
    "align quickstart": Command(
        prepare=(experiments,),
        check=_all(_files("quickstart/report/index.html", "quickstart/runs/*/done"),
                   _prints_the_readme_quickstart_output)),
    "align train --data /data/VLCS --dataset vlcs --algorithm align --test-domains VOC2007 "
    "--steps 5001 --seed 0 --out runs/vlcs_align_voc": Command(
        prepare=(domainbed_folder("VLCS", "vlcs"), config_file("tiny.yaml", **ALIGN_WARMUPS)),
        subs=(("/data/VLCS", "VLCS"), ("--steps 5001", "--steps 4 --config tiny.yaml")),
        check=_done("runs/vlcs_align_voc", dataset="vlcs", test_domains=["VOC2007"])),
    "align train --data /data/terra_incognita --dataset terra_incognita --algorithm erm "
    "--protocol single_source --train-domains location_100 --steps 5001 --seed 0 "
    "--out runs/ti_erm": Command(
        prepare=(domainbed_folder("terra_incognita", "terra_incognita"), config_file("tiny.yaml")),
        subs=(("/data/terra_incognita", "terra_incognita"),
              ("--steps 5001", "--steps 2 --config tiny.yaml")),
        check=_done("runs/ti_erm", protocol="single_source", train_domains=["location_100"])),
    "align train --data my_images --masks my_masks --algorithm align --protocol in_distribution "
    "--steps 5001 --seed 1 --out runs/mine --config my.yaml": Command(
        prepare=(synth_at("my_images", "images"), synth_at("my_masks", "masks"),
                 readme_yaml_at("my.yaml", (
                     ("backbone: resnet18", "backbone: smallcnn\npretrained: null"),
                     ("image_size: 224", "image_size: 32"), ("batch_size: 32", "batch_size: 2"),
                     ("eval_every: 200", "eval_every: 2\nnum_workers: 0"),
                     ("fill: blur}", "fill: blur, warmup_steps: 2, masker_warmup_steps: 1}")))),
        subs=(("--steps 5001", "--steps 4"),),
        check=_done("runs/mine", protocol="in_distribution", seed=1, hparams={"fill": "blur"})),
    "align train --preset dre --data /data/terra_incognita --test-domains location_100 "
    "--out runs/ti_dre": Command(
        prepare=(domainbed_folder("terra_incognita", "terra_incognita"), config_file("tiny.yaml")),
        subs=(("/data/terra_incognita", "terra_incognita"),
              ("--out runs/ti_dre", "--out runs/ti_dre --config tiny.yaml --steps 2")),
        check=_done("runs/ti_dre", preset="dre", algorithm="dre", selection="val_loss")),
    # 96 tiny runs (4 regimes x 4 algorithms x 2 domains x 3 seeds): about 15 s.
    # docs/datasets.md: the archives come from `offline_datasets` instead of the internet.
    "align prepare vlcs --root data": Command(
        prepare=(offline,), check=_prepared("data/VLCS", "https://drive.usercontent.google.com/")),
    "align check data/VLCS --dataset vlcs": Command(
        prepare=(offline, after("align prepare vlcs --root data")), check=_says("check passed")),
    "align train --data data/VLCS --dataset vlcs --algorithm erm --test-domains VOC2007 "
    "--steps 5001 --seed 0 --out runs/vlcs_erm_voc": Command(
        prepare=(offline, after("align prepare vlcs --root data"), config_file("tiny.yaml")),
        subs=(("--steps 5001", "--steps 2 --config tiny.yaml"),),
        check=_done("runs/vlcs_erm_voc", dataset="vlcs", test_domains=["VOC2007"])),
    "align prepare terra_incognita --root data": Command(
        prepare=(offline,), check=_prepared("data/terra_incognita")),
    "align prepare pacs --root data": Command(prepare=(offline,), check=_prepared("data/PACS")),
    "align prepare office_home --root data": Command(
        prepare=(offline,), check=_prepared("data/office_home")),
    "align check data/terra_incognita --dataset terra_incognita": Command(
        prepare=(offline, after("align prepare terra_incognita --root data")),
        check=_says("check passed")),
    "align prepare vlcs --root data --mirror http://fileserver.example.org/domainbed": Command(
        prepare=(offline,),
        check=_prepared("data/VLCS", "http://fileserver.example.org/domainbed/VLCS.tar.gz")),
    "align prepare pacs --root data --archive downloads/PACS.zip": Command(
        prepare=(archive_at("downloads", "PACS.zip"),),
        check=_prepared("data/PACS", "{cwd}/downloads/PACS.zip")),
    "align prepare terra_incognita --root data --archive downloads/eccv_18_all_images_sm.tar.gz "
    "--archive downloads/eccv_18_annotations.tar.gz": Command(
        prepare=(archive_at("downloads", "eccv_18_all_images_sm.tar.gz"),
                 archive_at("downloads", "eccv_18_annotations.tar.gz")),
        check=_prepared("data/terra_incognita", "{cwd}/downloads/eccv_18_all_images_sm.tar.gz",
                        "{cwd}/downloads/eccv_18_annotations.tar.gz")),
    "align benchmark --out benchmark": Command(
        prepare=(experiments,), check=_files("benchmark/regimes.md"), slow=True),
    "align evaluate runs/align": Command(
        prepare=(runs,), check=_files("runs/align/evaluation.json")),
    "align evaluate runs/align --checkpoint last --explainer integrated_gradients "
    "--substrate mean": Command(prepare=(runs,), check=_files("runs/align/evaluation.json")),
    "align evaluate runs/align --preset dre_auc": Command(
        prepare=(runs,), check=_files("runs/align/evaluation-dre_auc.json")),
    "align evaluate runs/erm": Command(prepare=(runs,), check=_files("runs/erm/evaluation.json")),
    "align report runs/erm runs/align --out report": Command(
        prepare=(after("align evaluate runs/erm"), after("align evaluate runs/align")),
        check=_files("report/index.html")),
    "align collect sweeps/toy": Command(
        prepare=(sweep_at("sweeps/toy"),),
        check=_files("sweeps/toy/collected/results.md", "sweeps/toy/collected/selected.json")),
    "align collect sweeps/toy --selection training_domain_validation --selection oracle "
    "--out tables": Command(prepare=(sweep_at("sweeps/toy"),), check=_files("tables/results.tex")),
    "align report sweeps/toy --out report": Command(
        prepare=(sweep_at("sweeps/toy"),), check=_files("report/index.html")),
    "align benchmark --out benchmark --regime square-scratch --algorithms erm dre align": Command(
        prepare=(experiments,), check=_files("benchmark/square-scratch/results.md")),
    "align mask-quality --out mask_quality --seeds 0 1 2": Command(
        prepare=(experiments,), check=_files("mask_quality/mask_quality_gradia.md")),
    # After the GRADIA run, as documented: its ERM and ALIGN runs are reused, not refused. Both
    # experiments together: about 8 s.
    "align mask-quality --out mask_quality --method align --seeds 0 1 2": Command(
        prepare=(experiments, after("align mask-quality --out mask_quality --seeds 0 1 2")),
        check=_files("mask_quality/mask_quality_align.md"), slow=True),
    "align shortcut --out benchmark/square-scratch": Command(
        prepare=(bench_at("benchmark/square-scratch"),),
        check=_files("benchmark/square-scratch/shortcut.md")),
    "align shortcut --out mask_quality": Command(
        prepare=(bench_at("mask_quality"),), check=_files("mask_quality/shortcut.md")),
    "align benchmark --out benchmark --regime square-scratch --algorithms align "
    "--set sparsity_weight=1.0": Command(
        prepare=(experiments,),
        check=_files("benchmark/square-scratch/results-sparsity_weight=1.0.md")),
    "align synth --out data/synth --seed 0": Command(check=_files("data/synth/synth.json")),
    "align pretrain --out pretrained": Command(
        prepare=(experiments,), check=_files("pretrained/smallcnn-64px-seed0-*.pt")),
    "align benchmark --out benchmark --regime background-pretrained": Command(
        prepare=(experiments,), check=_files("benchmark/background-pretrained/results.md")),
    "align shortcut --out benchmark/background-pretrained": Command(
        prepare=(bench_at("benchmark/background-pretrained"),),
        check=_files("benchmark/background-pretrained/shortcut.md")),
    # docs/sweeps.md and the README's sweep section
    "align sweep --out sweeps/synth --synthetic square-scratch --algorithms erm align --seeds 0 "
    "--dry-run": Command(
        prepare=(experiments,), check=_says("4 runs = 2 algorithm(s) x 2 cell(s) x 1 draw(s)")),
    "align sweep --out sweeps/synth --synthetic square-scratch --algorithms erm align --seeds 0 "
    "--launcher pool --workers 2": Command(
        prepare=(experiments,), check=_files("sweeps/synth/runs/align/lodo-sketch/h0/s0-*/done",
                                             "sweeps/synth/logs/erm/lodo-photo/h0/s0-*.log"),
        slow=True),
    "align masks --data data/VLCS --out data/VLCS_masks --source generic": Command(
        prepare=(domainbed_folder("data/VLCS", "vlcs"),),
        check=_files("data/VLCS_masks/mask_source.json")),
    "align sweep --config configs/vlcs_in_distribution.yaml --data data/VLCS --masks "
    "data/VLCS_masks --out sweeps/vlcs_in_distribution --dry-run": Command(
        prepare=(domainbed_folder("data/VLCS", "vlcs"), shipped_configs),
        check=_says("24 runs = 8 algorithm(s) x 1 cell(s)")),
    # As documented, the shipped ResNet-50 sweep, submitted to a stand-in sbatch.
    "align sweep --config configs/vlcs_in_distribution.yaml --data data/VLCS --masks "
    "data/VLCS_masks --out sweeps/vlcs_in_distribution --launcher slurm --partition gpu --time "
    "600 --gpus-per-job 1 --cpus-per-job 8 --mem 32": Command(
        prepare=(domainbed_folder("data/VLCS", "vlcs"), shipped_configs, fake_slurm),
        check=_submitted("sweeps/vlcs_in_distribution", 24)),
    # The shipped single-source sweep made tiny: ERM and GRADIA from one source, one seed.
    "align sweep --config configs/vlcs_single_source.yaml --data data/VLCS --masks "
    "data/VLCS_masks --out sweeps/vlcs_single_source --launcher pool --gpus 0,1,2,3": Command(
        prepare=(after("align masks --data data/VLCS --out data/VLCS_masks --source generic"),
                 sweep_file("tiny.yaml", algorithms=["erm", "gradia"], seeds=[0],
                            protocols=["single_source"], train_domains=["Caltech101"])),
        subs=(("configs/vlcs_single_source.yaml", "tiny.yaml"),),
        check=_files("sweeps/vlcs_single_source/runs/gradia/single_source-Caltech101/h0/*/done"),
        slow=True),
    "align sweep --config configs/vlcs_single_source.yaml --data data/VLCS --masks "
    "data/VLCS_masks --out sweeps/vlcs_single_source --launcher slurm --cluster local --wait":
        Command(
            prepare=(after("align masks --data data/VLCS --out data/VLCS_masks --source generic"),
                     sweep_file("tiny.yaml", algorithms=["erm", "gradia"], seeds=[0],
                                protocols=["single_source"], train_domains=["Caltech101"])),
            subs=(("configs/vlcs_single_source.yaml", "tiny.yaml"),),
            check=_files("sweeps/vlcs_single_source/runs/erm/single_source-Caltech101/h0/*/done",
                         "sweeps/vlcs_single_source/slurm/submitted.jsonl"),
            slow=True),
    # The shipped sweep's estimate, made tiny (its ResNet-50 would take an hour on 2 cores).
    "align sweep --config configs/vlcs_in_distribution.yaml --data data/VLCS --masks "
    "data/VLCS_masks --out sweeps/vlcs_in_distribution --estimate": Command(
        prepare=(after("align masks --data data/VLCS --out data/VLCS_masks --source generic"),
                 sweep_file("tiny.yaml", algorithms=["erm", "gradia", "align"], seeds=[0, 1],
                            protocols=["in_distribution"])),
        subs=(("configs/vlcs_in_distribution.yaml", "tiny.yaml"),),
        check=_says("total: 6 runs")),
    # A finished tiny in-distribution sweep in the documented folder (ERM and DRE, 2 seeds).
    "align collect sweeps/vlcs_in_distribution": Command(
        prepare=(domainbed_folder("data/VLCS", "vlcs"),
                 sweep_file("tiny.yaml", algorithms=["erm", "dre"], seeds=[0, 1],
                            protocols=["in_distribution"]),
                 swept("--config tiny.yaml --data data/VLCS --out sweeps/vlcs_in_distribution")),
        check=_files("sweeps/vlcs_in_distribution/collected/results.md")),
}

#: Lines of the docs' bash blocks that no test runs, each with the reason.
NOT_RUN = {
    "python3 -m venv .venv && . .venv/bin/activate && pip install -c constraints.txt -e . "
    "&& align quickstart": "installs with pip (network); CI's .ci/run does the same install, "
                           "and `align quickstart` runs above",
    "python3 -m venv .venv && . .venv/bin/activate && pip install -c constraints.txt "
    "-e \".[test]\" && python -m pytest": "installs with pip (network) and runs this test suite",
}


def _unique_commands() -> list[str]:
    return list(dict.fromkeys(line for _, line in shell_commands()))


def run_command(line: str, cwd: Path, request: pytest.FixtureRequest) -> None:
    """Prepare `cwd` (the current directory), run the command line through the CLI, check it."""
    from typer.testing import CliRunner

    from align.cli import app, expand_multi

    assert line in COMMANDS, f"new documented command with no test (add it to COMMANDS): {line}"
    command = COMMANDS[line]
    for prepare in command.prepare:
        prepare(cwd, request)
    argv = expand_multi(shlex.split(substitute(line, command.subs))[1:])
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, f"{line}\n{result.output}"
    if command.check:
        command.check(cwd, result.output)


@pytest.mark.parametrize("line", [
    pytest.param(line, id=line, marks=[pytest.mark.slow] if COMMANDS.get(line, Command()).slow
                 else []) for line in _unique_commands()])
def test_documented_command_runs(line, tmp_path, monkeypatch, request):
    monkeypatch.chdir(tmp_path)
    run_command(line, tmp_path, request)


def test_every_command_entry_is_documented():
    stale = set(COMMANDS) - set(_unique_commands())
    assert not stale, f"COMMANDS lists commands no doc shows any more: {sorted(stale)}"


def test_every_shell_line_is_run_or_listed_with_a_reason():
    commands = set(_unique_commands())
    for doc, line in shell_lines():
        assert line in commands or line in NOT_RUN, (
            f"{doc}: shell line {line!r} is neither an `align` command nor in NOT_RUN")
    assert set(NOT_RUN) <= {line for _, line in shell_lines()}


# --- the config files -------------------------------------------------------------------------

#: Every ```yaml block of the docs, by (doc, a text only it contains): the test that uses it.
YAML_BLOCKS = {
    (README.name, "hparams: {lr: 5.0e-5"): "the README's `align train ... --config my.yaml` "
                                           "(COMMANDS, `readme_yaml_at`)",
    ("sweeps.md", "n_hparams: 8"): "test_the_sweep_file_example_makes_its_grid",
}


def test_every_yaml_block_has_a_test():
    for doc, body in fenced_blocks("yaml"):
        assert [k for k in YAML_BLOCKS if k[0] == doc and k[1] in body], (
            f"{doc}: new config example with no test (add it to YAML_BLOCKS):\n{body}")
    for doc, marker in YAML_BLOCKS:
        found = [b for d, b in fenced_blocks("yaml") if d == doc and marker in b]
        assert len(found) == 1, f"{doc}: {len(found)} yaml blocks contain {marker!r}, expected 1"


def test_the_sweep_file_example_makes_its_grid(tmp_path, monkeypatch, request):
    """docs/sweeps.md's sweep file, as written, on a VLCS-shaped folder: every key is accepted
    and the grid is 3 algorithms x 4 held-out domains x 8 draws x 3 seeds (a dry run: nothing
    trains, so its ResNet-50 and ImageNet weights are never loaded)."""
    from typer.testing import CliRunner

    from align.cli import app

    monkeypatch.chdir(tmp_path)
    domainbed_folder("data/VLCS", "vlcs")(tmp_path, request)
    (body,) = [b for doc, b in fenced_blocks("yaml") if doc == "sweeps.md"]
    (tmp_path / "sweep.yaml").write_text(body)
    result = CliRunner().invoke(app, ["sweep", "--config", "sweep.yaml", "--data", "data/VLCS",
                                      "--out", "sweeps/vlcs", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "288 runs = 3 algorithm(s) x 4 cell(s) x 8 draw(s) x 3 seed(s)" in result.output
    assert "warmup_steps=2000" in result.output  # its `hparams: {align.warmup_steps: 2000}`
    assert not (tmp_path / "sweeps").exists()
