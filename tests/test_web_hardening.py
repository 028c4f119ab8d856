"""The local page's server against hostile or clumsy clients: only photo formats are
decoded, slow uploads time out, foreign Host headers are refused, a dropped upload is one
log line, and nothing is fetched from a CDN."""

import asyncio
import io
import logging
import re
import socket
import threading
import time

import pytest
import uvicorn
from fake_bundle import make_bundle, read_metadata, write_metadata
from fastapi.testclient import TestClient
from PIL import EpsImagePlugin, Image
from typer.testing import CliRunner

from posturescreen.cli import app
from posturescreen.screening.bundle import load_bundle
from posturescreen.screening.web.app import create_app
from posturescreen.screening.web.hosts import allowed_hosts


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    folder = make_bundle(tmp_path_factory.mktemp("web") / "b")
    meta = read_metadata(folder)  # free-form metrics must never break /api/models
    meta["metrics"] = [{"metric": "AUC", "ci_kind": "bootstrap", "estimate": "high"}]
    write_metadata(folder, meta)
    return load_bundle(folder)


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (120, 90, 60)).save(buf, "JPEG")
    return buf.getvalue()


def _client(bundle, host="127.0.0.1", **kw) -> TestClient:
    return TestClient(create_app([bundle], **kw), base_url=f"http://{host}")


def test_only_photo_formats_are_decoded(bundle, monkeypatch):
    opened = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open",
                        lambda self: opened.append(1) or (_ for _ in ()).throw(SyntaxError))
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "EPS")  # would reach Ghostscript when decoded
    r = _client(bundle).post("/api/predict", content=buf.getvalue(),
                             headers={"content-type": "image/jpeg"})
    assert r.status_code == 422 and "accepted: JPEG, PNG, WEBP, BMP, TIFF" in r.json()["detail"]
    assert opened == []
    for fmt in ("PNG", "WEBP", "BMP", "TIFF"):
        buf = io.BytesIO()
        Image.new("RGB", (40, 30), (10, 200, 30)).save(buf, fmt)
        r = _client(bundle).post("/api/predict", content=buf.getvalue(),
                                 headers={"content-type": f"image/{fmt.lower()}"})
        assert r.status_code == 200, (fmt, r.text)


def test_host_header_allow_list(bundle):
    for host in ("127.0.0.1", "localhost", "[::1]"):
        assert _client(bundle, host).get("/api/models").status_code == 200
    rebinding = _client(bundle, "attacker.example")
    assert rebinding.get("/api/models").status_code == 400
    assert rebinding.post("/api/predict", content=_jpeg(),
                          headers={"content-type": "image/jpeg"}).status_code == 400
    lan = _client(bundle, "screening.lan", allowed_hosts=["127.0.0.1", "screening.lan"])
    assert lan.get("/api/models").status_code == 200
    assert lan.get("/api/models").json()[0]["auc"] is None  # "high" is not a number


def test_serve_allow_host_option():
    assert allowed_hosts("127.0.0.1", []) == ["127.0.0.1", "localhost", "[::1]"]
    assert allowed_hosts("192.168.1.20", ["Screening.LAN", "fe80::1"]) == [
        "127.0.0.1", "localhost", "[::1]", "192.168.1.20", "screening.lan", "[fe80::1]"]
    assert "*" in allowed_hosts("0.0.0.0", ["*"])
    for bad in (["a*b"], ["exa mple"], ["--port=1"]):
        result = CliRunner().invoke(app, ["serve", "--bundle", "nowhere", "--allow-host",
                                          bad[0]])
        assert result.exit_code == 2 and "--allow-host" in result.output


def test_no_swagger_ui_and_nothing_from_a_cdn(bundle):
    client = _client(bundle)
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]["/api/predict"]["post"]["requestBody"]["content"]) >= {
        "image/jpeg", "image/png", "image/webp"}
    page = client.get("/").text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert 'accept="image/jpeg,image/png,image/webp,image/bmp,image/tiff"' in page


def _scope(path="/api/predict"):
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
            "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"image/jpeg"),
                        (b"content-length", b"100000")]}


async def _call(asgi, messages):
    """Run one request through the ASGI app with the given client messages; after them
    the client says nothing more."""
    sent = []

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    await asyncio.wait_for(asgi(_scope(), receive, send), timeout=30)
    return sent


def test_a_slow_upload_times_out(bundle):
    asgi = create_app([bundle], upload_timeout_s=0.2)
    sent = asyncio.run(_call(asgi, [{"type": "http.request", "body": b"\xff\xd8",
                                     "more_body": True}]))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 408
    assert b"took longer than 0.2 s" in b"".join(m.get("body", b"") for m in sent)


def test_a_dropped_upload_is_one_log_line(bundle, caplog):
    asgi = create_app([bundle])
    with caplog.at_level(logging.INFO):
        asyncio.run(_call(asgi, [{"type": "http.request", "body": b"\xff\xd8" * 10,
                                  "more_body": True}, {"type": "http.disconnect"}]))
    mine = [r for r in caplog.records if r.name == "posturescreen.screening.web"]
    assert [r.getMessage() for r in mine] == ["upload dropped by the client after 20 bytes"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_server_slow_and_dropped_clients(bundle, caplog):
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app([bundle], upload_timeout_s=0.5),
                                           host="127.0.0.1", port=port, log_config=None,
                                           log_level="info"))
    thread = threading.Thread(target=server.run, daemon=True)
    head = (b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: 100000\r\n\r\n")
    with caplog.at_level(logging.INFO):
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=20) as slow:
                slow.sendall(head + b"\xff\xd8")  # ... and never the rest
                assert slow.recv(100).startswith(b"HTTP/1.1 408")
            with socket.create_connection(("127.0.0.1", port), timeout=20) as dropped:
                dropped.sendall(head + b"\xff\xd8" * 50)
                time.sleep(0.1)
            while time.monotonic() < deadline and not any(
                    "dropped" in r.getMessage() for r in caplog.records):
                time.sleep(0.05)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    assert any(r.getMessage() == "upload dropped by the client after 100 bytes"
               for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
