"""The verified, resumable download, against an HTTP server on 127.0.0.1."""

import hashlib
import http.server
import threading
from functools import partial
from pathlib import Path

import pytest

from bench.datasets import CamVid
from bench.datasets import download as dl
from bench.errors import SegbenchError


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support; can cut a file short to simulate a dropped link."""

    cut: dict[str, int] = {}  # path -> bytes to send before hanging up (once)
    requests: list[tuple[str, str | None]] = []

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        self.requests.append((self.path, self.headers.get("Range")))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if rng := self.headers.get("Range"):
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in self.cut:
            body = body[: self.cut.pop(self.path)]
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    handler = partial(RangeHandler, directory=str(root))
    RangeHandler.cut, RangeHandler.requests = {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def _put(root: Path, rel: str, data: bytes) -> str:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_download_verifies_and_writes_manifest(server, tmp_path):
    root, url = server
    manifest = {rel: _put(root, rel, rel.encode() * 1000) for rel in ("a.txt", "sub/b.png")}
    dest = tmp_path / "dest"
    dl.download(url, dest, manifest, workers=2)
    assert (dest / "sub" / "b.png").read_bytes() == b"sub/b.png" * 1000
    assert dl.read_manifest(dest / "SHA256SUMS") == manifest
    assert dl.verify(dest, manifest, progress=False) == []
    # a second run fetches nothing: every file is present and verified
    RangeHandler.requests.clear()
    dl.download(url, dest, manifest, workers=2)
    assert RangeHandler.requests == []


def test_corrupted_file_is_refused_and_the_rest_kept(server, tmp_path):
    root, url = server
    good = _put(root, "good.bin", b"g" * 5000)
    _put(root, "bad.bin", b"tampered")
    manifest = {"good.bin": good, "bad.bin": hashlib.sha256(b"original").hexdigest()}
    dest = tmp_path / "dest"
    with pytest.raises(SegbenchError, match=r"bad\.bin: SHA-256 .* refused"):
        dl.download(url, dest, manifest, workers=1)
    assert not (dest / "bad.bin").exists() and not (dest / "bad.bin.part").exists()
    assert (dest / "good.bin").read_bytes() == b"g" * 5000


def test_interrupted_download_resumes_with_range(server, tmp_path):
    root, url = server
    data = bytes(range(256)) * 400
    manifest = {"big.bin": _put(root, "big.bin", data)}
    RangeHandler.cut["/big.bin"] = 30_000
    dest = tmp_path / "dest"
    with pytest.raises(SegbenchError, match="big.bin"):
        dl.download(url, dest, manifest, workers=1, timeout=5)
    assert not (dest / "big.bin").exists()  # nothing unverified is put in place
    assert (dest / "big.bin.part").stat().st_size == 30_000
    dl.download(url, dest, manifest, workers=1)
    assert (dest / "big.bin").read_bytes() == data
    assert RangeHandler.requests[-1] == ("/big.bin", "bytes=30000-")


def test_missing_file_on_server(server, tmp_path):
    _, url = server
    with pytest.raises(SegbenchError, match="HTTP 404"):
        dl.download(url, tmp_path / "d", {"nope.png": "0" * 64}, workers=1)


def test_real_camvid_files_through_the_shipped_manifest(server, tmp_path, camvid_root):
    """Serve a slice of the real CamVid; the shipped manifest must accept it and load it."""
    root, url = server
    full = dl.read_manifest(dl.CAMVID_MANIFEST)
    assert len(full) == 1405  # 1402 PNGs + 3 split lists
    src = camvid_root / "camvid"
    lines = (src / "test.txt").read_text().splitlines()[:2]
    rels = [p.removeprefix("/SegNet/CamVid/") for line in lines for p in line.split()]
    for rel in rels:
        _put(root, rel, (src / rel).read_bytes())
    (root / "test.txt").write_text("\n".join(lines) + "\n")
    manifest = {rel: full[rel] for rel in rels}
    dl.download(url, tmp_path / "data" / "camvid", manifest, workers=2)
    (tmp_path / "data" / "camvid" / "test.txt").write_text("\n".join(lines) + "\n")
    ds = CamVid("test", root=tmp_path / "data")
    assert len(ds) == 2 and ds[1][0].shape == (360, 480, 3)


def test_shared_copy_matches_the_shipped_manifest(camvid_root):
    manifest = dl.read_manifest(dl.CAMVID_MANIFEST)
    assert dl.read_manifest(camvid_root / "camvid" / "SHA256SUMS").items() <= manifest.items()
    few = dict(list(manifest.items())[:5]) | {"test.txt": manifest["test.txt"]}
    assert dl.verify(camvid_root / "camvid", few, progress=False) == []


def test_manifest_path_outside_folder_is_refused(tmp_path):
    bad = tmp_path / "SUMS"
    bad.write_text("0" * 64 + "  ../../etc/passwd\n")
    with pytest.raises(SegbenchError, match="outside the dataset folder"):
        dl.read_manifest(bad)
