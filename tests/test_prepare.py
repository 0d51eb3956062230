"""`align prepare` and `align check`, offline: a local HTTP server on 127.0.0.1 serves small fake
archives built here (a few 4x4 images per domain and class), and the presets' counts are scaled
down to match them (`prepare(..., preset=...)`, or the preset table patched for the CLI); the real
presets' counts are tested through `match_release` without images."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import re
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from align.cli import app
from align.data.check import check_dataset, match_release, releases_table
from align.data.decode import DataError
from align.data.download import DownloadError, fetch, part_path
from align.data.extract import UnsafeArchive, extract
from align.data.prepare import RECIPES, STAGING, prepare, sources_table
from align.data.presets import PRESETS, Preset, Release

VLCS = PRESETS["vlcs"]
TERRA = PRESETS["terra_incognita"]


# ------------------------------------------------------------------------------------ fake server


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves `server.root` with `Range: bytes=N-` support; `server.cut[name] = n` sends only n
    bytes of the next response for `name` and drops the connection; `server.ignore_range`
    answers every request with the whole file."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        srv = self.server
        name = self.path.lstrip("/").split("?")[0]
        srv.requests.append((name, self.headers.get("Range")))
        path = srv.root / name
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        start = int(m.group(1)) if m and not srv.ignore_range else 0
        if m and not srv.ignore_range and start >= len(data):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.end_headers()
            return
        body = data[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", srv.types.get(name, "application/octet-stream"))
        self.end_headers()
        cut = srv.cut.pop(name, None)
        self.wfile.write(body if cut is None else body[:cut])
        self.close_connection = cut is not None

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "mirror"
    root.mkdir()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.root, srv.requests, srv.cut, srv.types, srv.ignore_range = root, [], {}, {}, False
    srv.daemon_threads = True
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


# ---------------------------------------------------------------------------------- fake archives


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (seed * 37 % 256, seed * 91 % 256, 7)).save(buf, "JPEG")
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _counts(preset: Preset, n: int = 2, skip: tuple[str, str] | None = None) -> dict:
    return {d: {c: (0 if (d, c) == skip else n) for c in preset.classes} for d in preset.domains}


def _scaled(preset: Preset, counts: dict, per_class: bool = True) -> Preset:
    """`preset` whose only release is `counts` (the fake archives' counts)."""
    per_domain = {d: sum(c.values()) for d, c in counts.items()}
    release = Release("fake", sum(per_domain.values()), per_domain=per_domain,
                      per_class=counts if per_class else None)
    return Preset(preset.name, preset.domains, preset.classes, releases=(release,))


def vlcs_tar(path: Path, counts: dict, extra=()) -> Path:
    """DomainBed's VLCS.tar.gz in small: VLCS/<domain>/<class>/<i>.jpg, plus `extra` members
    (callables adding to the open tar)."""
    with tarfile.open(path, "w:gz") as tar:
        for d, per in counts.items():
            for c, n in per.items():
                for i in range(n):
                    _add(tar, f"VLCS/{d}/{c}/{i}.jpg", _jpeg(i + len(c)))
        for add in extra:
            add(tar)
    return path


def terra_archives(folder: Path) -> tuple[Path, Path, dict]:
    """The two TerraIncognita sources in small, and the counts the build must give: 2 images per
    location and class, plus an image at another location (99), one of another category (deer)
    and one annotated twice (bird and cat: it lands in both folders)."""
    images, annotations = [], []
    cats = [{"id": i, "name": c} for i, c in enumerate([*TERRA.classes, "deer"])]
    cat_id = {c["name"]: c["id"] for c in cats}
    plan = [(d.removeprefix("location_"), c) for d in TERRA.domains for c in TERRA.classes
            for _ in range(2)] + [("99", "bird"), ("38", "deer")]
    for i, (loc, cls) in enumerate(plan):
        images.append({"id": f"im{i}", "file_name": f"{i:04d}.jpg",
                       "location": int(loc) if i % 2 else loc})  # both JSON styles: 38 and "38"
        annotations.append({"id": f"a{i}", "image_id": f"im{i}", "category_id": cat_id[cls]})
    annotations.append({"id": "twice", "image_id": "im0", "category_id": cat_id["cat"]})
    half = len(images) // 2
    img_tar = folder / "eccv_18_all_images_sm.tar.gz"
    with tarfile.open(img_tar, "w:gz") as tar:
        for i in range(len(plan)):
            _add(tar, f"eccv_18_all_images_sm/{i:04d}.jpg", _jpeg(i))
    ann_tar = folder / "eccv_18_annotations.tar.gz"
    with tarfile.open(ann_tar, "w:gz") as tar:
        for part, ims in (("train", images[:half]), ("cis_val", images[half:])):
            ids = {im["id"] for im in ims}
            doc = {"images": ims, "categories": cats,
                   "annotations": [a for a in annotations if a["image_id"] in ids]}
            _add(tar, f"eccv_18_annotation_files/{part}_annotations.json", json.dumps(doc).encode())
    counts = _counts(TERRA)
    counts["location_100"]["cat"] += 1  # im0 is at location 100, annotated bird and cat
    return img_tar, ann_tar, counts


def _no_folder_passes(root: Path, preset: Preset) -> bool:
    """True when no folder under `root` (itself included) passes `check_dataset`."""
    for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        try:
            check_dataset(d, preset, decode=False)
        except DataError:
            continue
        return False
    return True


# ------------------------------------------------------------------------------------ prepare


def test_prepare_from_a_mirror_then_check_and_prepare_again(server, tmp_path):
    counts = _counts(VLCS)
    vlcs_tar(server.root / "VLCS.tar.gz", counts)
    preset, root = _scaled(VLCS, counts), tmp_path / "data"
    res = prepare("vlcs", root, mirror=server.url, preset=preset, checksums=False)
    assert res.created and res.target == root / "VLCS"
    assert res.check.counts == counts and res.check.release.name == "fake"
    assert sorted(p.name for p in root.iterdir()) == ["VLCS"]  # the staging folder is gone
    assert check_dataset(root / "VLCS", preset).total == 40
    record = json.loads((root / "VLCS" / ".align-prepare.json").read_text())
    assert record["release"] == "fake" and record["sources"][0]["from"].startswith(server.url)
    n_requests = len(server.requests)
    again = prepare("vlcs", root, mirror=server.url, preset=preset, checksums=False)
    assert not again.created and len(server.requests) == n_requests  # left alone, no download


def test_prepare_applies_the_recipe_checksum(server, tmp_path):
    vlcs_tar(server.root / "VLCS.tar.gz", _counts(VLCS))
    with pytest.raises(DownloadError, match=r"md5 is [0-9a-f]{32}, expected 8870171e"):
        prepare("vlcs", tmp_path / "data", mirror=server.url, preset=_scaled(VLCS, _counts(VLCS)))
    assert not (tmp_path / "data" / "VLCS").exists()
    assert not (tmp_path / "data" / STAGING).exists()  # the bad file was deleted, nothing kept


def test_truncated_download_errors_then_resumes_from_the_part(server, tmp_path):
    counts = _counts(VLCS)
    size = vlcs_tar(server.root / "VLCS.tar.gz", counts).stat().st_size
    server.cut["VLCS.tar.gz"] = size // 2
    preset, root = _scaled(VLCS, counts), tmp_path / "data"
    with pytest.raises(DownloadError, match=rf"{server.url}/VLCS.tar.gz.*stopped at "
                                            rf"{size // 2:,} of {size:,} bytes.*run the same"):
        prepare("vlcs", root, mirror=server.url, preset=preset, checksums=False)
    part = part_path(root / STAGING / "vlcs" / "downloads" / "VLCS.tar.gz")
    assert part.stat().st_size == size // 2 and not (root / "VLCS").exists()
    res = prepare("vlcs", root, mirror=server.url, preset=preset, checksums=False)
    assert res.created and res.check.counts == counts
    assert server.requests[-1] == ("VLCS.tar.gz", f"bytes={size // 2}-")  # resumed, not restarted


def _escape(name):
    return lambda tar: _add(tar, name, b"escaped")


@pytest.mark.parametrize("member", ["../escape.txt", "VLCS/../../escape.txt", "{tmp}/escape.txt"])
def test_members_outside_the_target_are_refused(server, tmp_path, member):
    member = member.format(tmp=tmp_path)  # an absolute name, inside this test's own folder
    vlcs_tar(server.root / "VLCS.tar.gz", _counts(VLCS), extra=[_escape(member)])
    root = tmp_path / "data"
    # our own check's words (the standard library's tar filter would refuse too, in others)
    with pytest.raises(UnsafeArchive, match=re.escape(repr(member)) + " has (a '..' component|"
                                            "an absolute path)"):
        prepare("vlcs", root, mirror=server.url, preset=_scaled(VLCS, _counts(VLCS)),
                checksums=False)
    assert not list(tmp_path.rglob("escape.txt"))
    assert not (root / "VLCS").exists() and not (root / STAGING / "vlcs" / "extract").exists()


def _link(kind):
    def add(tar):
        info = tarfile.TarInfo("VLCS/Caltech101/bird/link.jpg")
        info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                     "device": tarfile.CHRTYPE}[kind]
        info.linkname = "/etc/passwd" if kind != "device" else ""
        tar.addfile(info)
    return add


@pytest.mark.parametrize("kind,words", [("symlink", "a symbolic link to '/etc/passwd'"),
                                        ("hardlink", "a hard link to '/etc/passwd'"),
                                        ("device", "a device or FIFO")])
def test_links_and_devices_are_refused(server, tmp_path, kind, words):
    vlcs_tar(server.root / "VLCS.tar.gz", _counts(VLCS), extra=[_link(kind)])
    root = tmp_path / "data"
    with pytest.raises(UnsafeArchive, match=r"'VLCS/Caltech101/bird/link.jpg' is "
                                            + re.escape(words)):
        prepare("vlcs", root, mirror=server.url, preset=_scaled(VLCS, _counts(VLCS)),
                checksums=False)
    assert not (root / "VLCS").exists() and not list(root.rglob("link.jpg"))


def test_a_missing_class_is_refused_and_leaves_nothing_that_passes(server, tmp_path):
    good = _counts(VLCS)
    vlcs_tar(server.root / "VLCS.tar.gz", _counts(VLCS, skip=("SUN09", "dog")))
    root, preset = tmp_path / "data", _scaled(VLCS, good)
    with pytest.raises(DataError, match=r"(?s)fails the check.*SUN09.*\['dog'\]"):
        prepare("vlcs", root, mirror=server.url, preset=preset, checksums=False)
    assert not (root / "VLCS").exists() and _no_folder_passes(root, preset)


def test_local_archive_instead_of_a_download(tmp_path):
    counts = _counts(VLCS)
    archive = vlcs_tar(tmp_path / "my-copy.tgz", counts)  # any name for a one-archive dataset
    res = prepare("vlcs", tmp_path / "data", archives=[archive], preset=_scaled(VLCS, counts),
                  checksums=False, mirror="http://127.0.0.1:9/never-contacted")
    assert res.created and res.check.counts == counts and archive.is_file()  # not consumed
    with pytest.raises(DownloadError, match=r"my-copy.tgz: md5 is [0-9a-f]{32}, expected 8870"):
        prepare("vlcs", tmp_path / "checked", archives=[archive], preset=_scaled(VLCS, counts))
    assert archive.is_file()  # a local file is never deleted, even when it does not match
    with pytest.raises(DataError, match=r"eccv_18_all_images_sm.tar.gz.*name the file"):
        prepare("terra_incognita", tmp_path / "t", archives=[archive])


def test_terra_incognita_is_built_from_the_images_and_annotations(server, tmp_path):
    img_tar, ann_tar, counts = terra_archives(server.root)
    res = prepare("terra_incognita", tmp_path / "data", mirror=server.url,
                  preset=_scaled(TERRA, counts))
    target = tmp_path / "data" / "terra_incognita"
    assert res.target == target and res.check.counts == counts
    assert sorted(p.name for p in target.iterdir() if p.is_dir()) == TERRA.domains
    assert not list(target.rglob("deer")) and not (target / "location_99").exists()
    assert (target / "location_100" / "bird" / "0000.jpg").is_file()
    assert (target / "location_100" / "cat" / "0000.jpg").is_file()
    # with local copies of both archives (matched by file name) the server is not needed
    res = prepare("terra_incognita", tmp_path / "local", archives=[img_tar, ann_tar],
                  preset=_scaled(TERRA, counts))
    assert res.check.counts == counts


def test_an_existing_incomplete_target_is_an_error_and_left_alone(tmp_path):
    counts = _counts(VLCS)
    archive = vlcs_tar(tmp_path / "VLCS.tar.gz", counts)
    mine = tmp_path / "data" / "VLCS" / "Caltech101" / "bird"
    mine.mkdir(parents=True)
    (mine / "keep.jpg").write_bytes(_jpeg(1))
    with pytest.raises(DataError, match=r"already exists but fails the check.*move it away"):
        prepare("vlcs", tmp_path / "data", archives=[archive], preset=_scaled(VLCS, counts),
                checksums=False)
    assert [p.name for p in (tmp_path / "data" / "VLCS").rglob("*")] == [
        "Caltech101", "bird", "keep.jpg"]


# -------------------------------------------------------------------------------------- download


def test_fetch_verifies_a_checksum_and_restarts_when_range_is_ignored(server, tmp_path):
    data = bytes(range(256)) * 64
    (server.root / "blob.bin").write_bytes(data)
    dest = tmp_path / "blob.bin"
    part_path(dest).write_bytes(b"\xff" * 1000)  # an old, wrong partial download
    server.ignore_range = True
    fetch(f"{server.url}/blob.bin", dest, checksum="sha256:" + hashlib.sha256(data).hexdigest())
    assert dest.read_bytes() == data and not part_path(dest).exists()
    dest.unlink()
    with pytest.raises(DownloadError, match=r"blob.bin.*sha256 is .*expected 00"):
        fetch(f"{server.url}/blob.bin", dest, checksum="sha256:" + "00" * 32)
    assert not dest.exists()


def test_fetch_errors_name_the_url(server, tmp_path):
    with pytest.raises(DownloadError, match=rf"{server.url}/nope.tar: HTTP 404"):
        fetch(f"{server.url}/nope.tar", tmp_path / "nope.tar")
    (server.root / "page.zip").write_text("<html>sign in</html>")
    server.types["page.zip"] = "text/html; charset=utf-8"
    with pytest.raises(DownloadError, match=r"HTML page instead of page.zip.*--archive"):
        fetch(f"{server.url}/page.zip", tmp_path / "page.zip")
    with pytest.raises(DownloadError, match=r"cannot connect.*--mirror or --archive"):
        fetch("http://127.0.0.1:9/x.tar", tmp_path / "x.tar", timeout=5)


# --------------------------------------------------------------------------------------- extract


def test_zip_members_are_checked(tmp_path):
    for name, why in (("../up.txt", "'..'"), ("/abs.txt", "absolute")):
        archive = tmp_path / "bad.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("ok/a.txt", "a")
            zf.writestr(zipfile.ZipInfo(name), "x")
        with pytest.raises(UnsafeArchive, match=re.escape(repr(name)) + f".*{why}"):
            extract(archive, tmp_path / "out")
        assert not (tmp_path / "out" / "ok").exists()  # names are checked before any write
    link = zipfile.ZipInfo("ok/link")
    link.external_attr = (0o120777 << 16)  # a symbolic link, as `zip --symlinks` stores it
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(UnsafeArchive, match=r"'ok/link' is not a plain file"):
        extract(archive, tmp_path / "out2")
    (tmp_path / "junk.zip").write_bytes(b"not an archive")
    with pytest.raises(DataError, match="neither a zip nor a tar"):
        extract(tmp_path / "junk.zip", tmp_path / "out3")


@pytest.mark.parametrize("compressed", [True, False])
def test_a_truncated_tar_is_a_clear_error(tmp_path, compressed):
    archive = vlcs_tar(tmp_path / "VLCS.tar.gz", _counts(VLCS))
    data = archive.read_bytes()
    if compressed:  # the gzip stream ends early
        archive.write_bytes(data[: len(data) // 2])
    else:  # a plain tar cut between two members: tarfile alone would call that the end
        with tarfile.open(archive) as tar:
            cut = tar.getmembers()[3].offset
        archive = tmp_path / "VLCS.tar"
        archive.write_bytes(gzip.decompress(data)[:cut])
    with pytest.raises(DataError, match=rf"{archive.name}: cannot read the tar archive"):
        extract(archive, tmp_path / "out")


# ----------------------------------------------------------------------------------------- check


def test_check_names_the_class_whose_count_differs(tmp_path):
    counts = _counts(VLCS, n=4)
    res = prepare("vlcs", tmp_path, archives=[vlcs_tar(tmp_path / "v.tgz", counts)],
                  preset=_scaled(VLCS, counts), checksums=False)
    for f in sorted((res.target / "LabelMe" / "car").iterdir())[:2]:  # half of one class
        f.unlink()
    with pytest.raises(DataError, match=r"LabelMe/car has 2 images, expected 4 \(-2\)"):
        check_dataset(res.target, _scaled(VLCS, counts))
    with pytest.raises(DataError, match=r"LabelMe has 18 images, expected 20.*car 2"):
        check_dataset(res.target, _scaled(VLCS, counts, per_class=False))


def _spread(per_domain: dict[str, int], classes: list[str]) -> dict:
    """Counts per domain and class that add up to `per_domain`."""
    k = len(classes)
    return {d: {c: n // k + (i < n % k) for i, c in enumerate(classes)}
            for d, n in per_domain.items()}


def test_real_presets_name_the_terra_incognita_release():
    papers = TERRA.releases[0].per_domain
    assert sum(papers.values()) == 24_788
    assert match_release(_spread(papers, TERRA.classes), TERRA, Path("x")).name.startswith("24,788")
    other = _spread({"location_100": 4_800, "location_38": 9_700, "location_43": 3_900,
                     "location_46": 5_930}, TERRA.classes)
    assert match_release(other, TERRA, Path("x")).name.startswith("24,330")
    half = _spread(papers, TERRA.classes)
    half["location_43"]["coyote"] //= 2  # half of one class deleted
    with pytest.raises(DataError,
                       match=r"(?s)location_43 has .*expected 4,020.*24,330.*not published"):
        match_release(half, TERRA, Path("x"))


def test_real_presets_are_consistent():
    assert VLCS.releases[0].total == 10_729
    assert VLCS.releases[0].per_domain == {"Caltech101": 1_415, "LabelMe": 2_656,
                                           "SUN09": 3_282, "VOC2007": 3_376}
    assert len(PRESETS["office_home"].classes) == 65 and len(PRESETS["pacs"].classes) == 7
    for name, preset in PRESETS.items():
        assert preset.domains == sorted(preset.domains) and preset.classes == sorted(preset.classes)
        assert preset.releases and name in RECIPES
    with pytest.raises(ValueError, match="per-domain counts sum to 3, not to the total 4"):
        Release("bad", 4, per_domain={"a": 1, "b": 2})


@pytest.mark.parametrize("name,make", [("sources", sources_table), ("releases", releases_table)])
def test_the_docs_tables_are_current(name, make):
    docs = (Path(__file__).resolve().parents[1] / "docs" / "datasets.md").read_text()
    block = re.search(rf"<!-- {name} -->\n(.*?)<!-- /{name} -->", docs, re.S)
    assert block and block.group(1) == make(), (
        f"docs/datasets.md: the {name} table is stale; paste {make.__module__}.{make.__name__}()")


# ------------------------------------------------------------------------------------------- CLI


def test_cli_prepare_and_check(server, tmp_path, monkeypatch):
    counts = _counts(VLCS)
    vlcs_tar(server.root / "VLCS.tar.gz", counts)
    monkeypatch.setitem(PRESETS, "vlcs", _scaled(VLCS, counts))
    runner, root = CliRunner(), tmp_path / "data"
    res = runner.invoke(app, ["prepare", "vlcs", "--root", str(root), "--mirror", server.url,
                              "--no-checksum"])
    assert res.exit_code == 0, res.output
    assert f"prepared {root / 'VLCS'}" in res.output
    res = runner.invoke(app, ["check", str(root / "VLCS"), "--dataset", "vlcs"])
    assert res.exit_code == 0 and "release fake, checked per class" in res.output
    next((root / "VLCS" / "SUN09" / "person").iterdir()).unlink()
    res = runner.invoke(app, ["check", str(root / "VLCS"), "--dataset", "vlcs", "--no-decode"])
    assert res.exit_code != 0
    assert "SUN09/person has 1 images, expected 2" in res.output + str(res.exception)
