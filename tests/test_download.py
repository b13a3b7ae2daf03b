"""download-weights against a local HTTP server: complete files land, bad ones never do."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import os
import socket
import threading

import pytest

from sadtalker_core import models as registry
from sadtalker_core.models.download import DownloadError, download_weights

NAME = "mapping_00229-model.pth.tar"


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _serve_as(monkeypatch, url: str) -> None:
    monkeypatch.setitem(registry.FILES, NAME, dataclasses.replace(registry.FILES[NAME], url=url))


def test_download_writes_a_valid_file_and_skips_it_next_time(
    server, weights_dir, tmp_path, monkeypatch
):
    root, base = server
    os.link(weights_dir / NAME, root / NAME)
    _serve_as(monkeypatch, f"{base}/{NAME}")
    seen = []
    dest = tmp_path / "ckpt"
    assert download_weights(dest, [NAME], progress=lambda n, d, t: seen.append((n, d, t))) == [
        dest / NAME
    ]
    assert (dest / NAME).read_bytes() == (weights_dir / NAME).read_bytes()
    assert seen[-1] == (NAME, (dest / NAME).stat().st_size, (dest / NAME).stat().st_size)
    assert download_weights(dest, [NAME]) == []  # already there and valid: nothing fetched
    assert sorted(p.name for p in dest.iterdir()) == [NAME]


def test_truncated_download_is_refused_and_removed(server, weights_dir, tmp_path, monkeypatch):
    root, base = server
    (root / NAME).write_bytes((weights_dir / NAME).read_bytes()[:100_000])
    _serve_as(monkeypatch, f"{base}/{NAME}")
    dest = tmp_path / "ckpt"
    with pytest.raises(DownloadError, match=r"(?s)not valid.*put them in"):
        download_weights(dest, [NAME])
    assert list(dest.iterdir()) == []


def test_unreachable_server_lists_files_to_fetch_by_hand(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _serve_as(monkeypatch, f"http://127.0.0.1:{port}/{NAME}")
    dest = tmp_path / "ckpt"
    with pytest.raises(
        DownloadError, match=rf"(?s)Could not download {NAME}.*{dest}.*check-weights"
    ):
        download_weights(dest, [NAME], timeout=5)
    assert list(dest.iterdir()) == []


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` by name and honours ``Range: bytes=N-`` (206), as release servers do."""

    files: dict[str, bytes] = {}
    ranges: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        data = self.files.get(self.path.lstrip("/"))
        if data is None:
            self.send_error(404)
            return
        start = 0
        if (rng := self.headers.get("Range")) is not None:
            self.ranges.append(rng)
            start = int(rng.removeprefix("bytes=").rstrip("-"))
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


def test_an_interrupted_download_resumes_from_a_mirror(weights_dir, tmp_path):
    data = (weights_dir / NAME).read_bytes()
    _RangeHandler.files, _RangeHandler.ranges = {NAME: data}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        dest = tmp_path / "ckpt"
        dest.mkdir()
        (dest / f"{NAME}.part").write_bytes(data[:300_000])  # what an interrupted run left
        seen = []
        base = f"http://127.0.0.1:{httpd.server_address[1]}/"
        got = download_weights(
            dest, [NAME], progress=lambda n, d, t: seen.append((d, t)), url_base=base
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert got == [dest / NAME] and (dest / NAME).read_bytes() == data
    assert _RangeHandler.ranges == ["bytes=300000-"]  # only the rest was fetched
    assert seen[0][0] > 300_000 and seen[-1] == (len(data), len(data))
    assert sorted(p.name for p in dest.iterdir()) == [NAME]  # no .part left


def test_a_server_without_ranges_restarts_the_file(server, weights_dir, tmp_path, monkeypatch):
    root, base = server
    os.link(weights_dir / NAME, root / NAME)
    dest = tmp_path / "ckpt"
    dest.mkdir()
    (dest / f"{NAME}.part").write_bytes(b"garbage from another file" * 1000)
    assert download_weights(dest, [NAME], url_base=base) == [dest / NAME]
    assert (dest / NAME).read_bytes() == (weights_dir / NAME).read_bytes()
