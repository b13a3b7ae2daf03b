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
