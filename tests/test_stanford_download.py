"""Stanford Background's download: the original archive converted as the shared copy was made,
every made file verified, against an HTTP server on 127.0.0.1 (the test builds the archive)."""

# ruff: noqa: F811 - `server` is the fixture imported from test_download
import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_download import server  # noqa: F401 - the fixture: files served on 127.0.0.1

import bench.datasets.stanford_download as sd
from bench.cli import main
from bench.datasets.download import read_manifest
from bench.errors import SegbenchError

NAMES = ["0000047", "0100855", "8005616"]  # three sizes, one portrait


@pytest.fixture()
def shared(stanford_root: Path) -> Path:
    return stanford_root / "stanford_background"


def regions_text(label: np.ndarray) -> str:
    """The original ``NAME.regions.txt`` of a shared label (void written back as -1)."""
    values = np.where(label == 255, -1, label.astype(np.int64))
    return "\n".join(" ".join(map(str, row)) for row in values) + "\n"


def build_archive(shared: Path, path: Path, change=None, extra=()) -> None:  # noqa: ANN001
    """iccv09Data.tar.gz of NAMES, with surfaces files beside the labels (to be ignored)."""
    files = {"iccv09Data/horizons.txt": (shared / "horizons.txt").read_bytes()}
    for name in NAMES:
        files[f"iccv09Data/images/{name}.jpg"] = (shared / "images" / f"{name}.jpg").read_bytes()
        label = np.array(Image.open(shared / "labels" / f"{name}.png"))
        files[f"iccv09Data/labels/{name}.regions.txt"] = regions_text(label).encode()
        files[f"iccv09Data/labels/{name}.surfaces.txt"] = b"0 1\n"
    if change is not None:
        change(files)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in [*files.items(), *extra]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture()
def small_manifest(shared: Path, tmp_path: Path, monkeypatch) -> dict[str, str]:
    """The shipped manifest's lines for NAMES (and horizons.txt), plus the split files of
    three images; made the module's MANIFEST."""
    shipped = read_manifest(sd.MANIFEST)
    keep = {"horizons.txt"} | {f"images/{n}.jpg" for n in NAMES}
    keep |= {f"labels/{n}.png" for n in NAMES}
    manifest = {rel: shipped[rel] for rel in sorted(keep)}
    for split, names in sd.fold_splits(NAMES).items():
        text = "".join(f"{n}\n" for n in names).encode()
        manifest[f"splits/{split}.txt"] = hashlib.sha256(text).hexdigest()
    path = tmp_path / "small.sha256"
    path.write_text("".join(f"{d}  {r}\n" for r, d in manifest.items()))
    monkeypatch.setattr(sd, "MANIFEST", path)
    return manifest


def test_the_shipped_manifest_is_the_shared_copys(shared: Path) -> None:
    assert read_manifest(sd.MANIFEST) == read_manifest(shared / "SHA256SUMS")
    assert len(read_manifest(sd.MANIFEST)) == 1 + 715 + 715 + 20


def test_fold_splits_reproduce_the_shared_split_files(shared: Path) -> None:
    names = [p.stem for p in (shared / "images").glob("*.jpg")]
    splits = sd.fold_splits(names)
    assert len(splits) == 20
    for split, listed in splits.items():
        assert (shared / "splits" / f"{split}.txt").read_text() == "".join(f"{n}\n" for n in listed)


def test_labels_convert_to_the_shared_copys_bytes(shared: Path) -> None:
    for name in NAMES:
        png = (shared / "labels" / f"{name}.png").read_bytes()
        label = np.array(Image.open(io.BytesIO(png)))
        made = sd.regions_to_label(regions_text(label), name)
        assert sd.encode_label(made) == png


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 1\n2\n", "not a matrix"),
        ("", "not a matrix"),
        ("0 x\n1 2\n", "a value is not an integer"),
        ("0 8\n1 2\n", "value 8 is neither a class 0..7 nor -1"),
        ("0 -2\n1 2\n", "value -2 is neither"),
    ],
)
def test_bad_regions_are_named(text: str, message: str) -> None:
    with pytest.raises(SegbenchError, match=f"^where: {message}"):
        sd.regions_to_label(text, "where")


def test_download_converts_verifies_and_then_check_passes(
    server,
    shared,
    small_manifest,
    tmp_path,
    capsys,
) -> None:
    root, url = server
    build_archive(shared, root / "iccv09Data.tar.gz")
    data = tmp_path / "data"
    args = ["--data-root", str(data), "--url", url + "iccv09Data.tar.gz"]
    assert main(["data", "download", "stanford_background", *args]) == 0
    assert "StanfordBackground present and verified" in capsys.readouterr().out
    folder = data / "stanford_background"
    for rel in small_manifest:
        assert (folder / rel).is_file(), rel
    for name in NAMES:  # byte for byte as the shared copy
        for rel in (f"images/{name}.jpg", f"labels/{name}.png"):
            assert (folder / rel).read_bytes() == (shared / rel).read_bytes()
    assert (
        not list(folder.rglob("*surfaces*")) and not (data / "stanford_background.staging").exists()
    )
    # the folder's own SHA256SUMS is the manifest: `data check` verifies the copy
    assert main(["data", "check", "stanford_background", "--data-root", str(data)]) == 0
    # ensure with everything present does not download again
    (root / "iccv09Data.tar.gz").unlink()
    assert main(["data", "ensure", "stanford_background", *args]) == 0


def _corrupt_image(files: dict) -> None:
    key = f"iccv09Data/images/{NAMES[1]}.jpg"
    data = bytearray(files[key])
    data[len(data) // 2] ^= 0xFF
    files[key] = bytes(data)


def test_a_corrupt_archive_is_refused_and_nothing_is_placed(
    server,
    shared,
    small_manifest,
    tmp_path,
    capsys,
) -> None:
    root, url = server
    build_archive(shared, root / "iccv09Data.tar.gz", change=_corrupt_image)
    data = tmp_path / "data"
    args = ["--data-root", str(data), "--url", url + "iccv09Data.tar.gz"]
    assert main(["data", "download", "stanford_background", *args]) == 2
    err = capsys.readouterr().err
    assert f"images/{NAMES[1]}.jpg: SHA-256 differs" in err and "refused" in err
    assert not (data / "stanford_background").exists()
    assert not (data / "stanford_background.staging").exists()


def test_a_changed_label_is_refused(server, shared, small_manifest, tmp_path, capsys) -> None:
    def change(files: dict) -> None:
        key = f"iccv09Data/labels/{NAMES[0]}.regions.txt"
        files[key] = files[key].replace(b"0 ", b"1 ", 1)

    root, url = server
    build_archive(shared, root / "iccv09Data.tar.gz", change=change)
    args = ["--data-root", str(tmp_path / "data"), "--url", url + "iccv09Data.tar.gz"]
    assert main(["data", "download", "stanford_background", *args]) == 2
    assert f"labels/{NAMES[0]}.png: SHA-256 differs" in capsys.readouterr().err


def test_a_truncated_archive_is_named(server, shared, small_manifest, tmp_path, capsys) -> None:
    root, url = server
    build_archive(shared, tmp_path / "whole.tar.gz")
    (root / "iccv09Data.tar.gz").write_bytes((tmp_path / "whole.tar.gz").read_bytes()[:5000])
    args = ["--data-root", str(tmp_path / "data"), "--url", url + "iccv09Data.tar.gz"]
    assert main(["data", "download", "stanford_background", *args]) == 2
    err = capsys.readouterr().err
    assert "stanford_background.tar.gz: not a readable iccv09Data.tar.gz" in err
    assert "delete it and rerun" in err


def test_members_outside_the_layout_are_never_written(
    server,
    shared,
    small_manifest,
    tmp_path,
) -> None:
    root, url = server
    evil = [("../../evil.txt", b"x"), ("iccv09Data/images/../../../evil.jpg", b"x")]
    build_archive(shared, root / "iccv09Data.tar.gz", extra=evil)
    data = tmp_path / "data"
    sd.download(data / "stanford_background", url + "iccv09Data.tar.gz", small_manifest)
    assert not list(tmp_path.rglob("evil*"))


def test_an_http_error_is_one_message(server, tmp_path, small_manifest, capsys) -> None:
    _, url = server
    args = ["--data-root", str(tmp_path / "data"), "--url", url + "missing.tar.gz"]
    assert main(["data", "download", "stanford_background", *args]) == 2
    assert "missing.tar.gz: HTTP 404" in capsys.readouterr().err
