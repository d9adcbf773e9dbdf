"""`mnist20k draw`: the page's one endpoint answers as `predict` does, refuses what it should and keeps
serving, serves nothing else; and in a real browser a drawn stroke is read."""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import threading

import pytest
import torch
from conftest import Lines, one_error_line
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from mnist20k.checkpoint import load_checkpoint
from mnist20k.cli import app
from mnist20k.config import make_config
from mnist20k.draw import MAX_BODY, DrawServer
from mnist20k.nets import rebuild
from mnist20k.train import train

runner = CliRunner()
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("draw") / "run"
    train(make_config(epochs=1, max_batches=4, batch_size=32), data_dir=data_dir, out_dir=out, device="cpu")
    return out


@pytest.fixture(scope="module")
def server(run):
    server = DrawServer(rebuild(load_checkpoint(run), device=CPU).module, CPU, "127.0.0.1", 0)  # port 0: any free one
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def request(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    connection.request(method, path, body=body, headers=headers or {})
    reply = connection.getresponse()
    data = reply.read()
    connection.close()
    return reply.status, data


def stroke_png(path, points=((140, 40), (150, 240))) -> bytes:
    image = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(image).line(points, fill=0, width=20)
    image.save(path)
    return path.read_bytes()


def test_the_endpoint_answers_as_predict_does(server, run, tmp_path):
    png = stroke_png(tmp_path / "stroke.png")
    status, data = request(server, "POST", "/predict", png, {"Content-Type": "image/png"})
    assert status == 200
    answer = json.loads(data)
    result = runner.invoke(app, ["predict", str(run), str(tmp_path / "stroke.png"), "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    predicted = json.loads(result.stdout)
    assert answer["digit"] == predicted["digit"]
    for top in predicted["top3"]:
        assert answer["probabilities"][top["digit"]] == top["p"]
    assert len(answer["image"]) == 28 and all(len(row) == 28 for row in answer["image"])


def test_refusals_are_4xx_and_the_server_keeps_serving(server, tmp_path):
    png = stroke_png(tmp_path / "stroke.png")
    # Refused from its Content-Length, before the body is read: the client is told while it would still send
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    connection.putrequest("POST", "/predict")
    connection.putheader("Content-Length", str(MAX_BODY + 1))
    connection.endheaders()
    reply = connection.getresponse()
    assert reply.status == 413 and "over 1,000,000 bytes" in json.loads(reply.read())["error"]
    connection.close()
    status, data = request(server, "POST", "/predict", b"GIF89a not a png at all")
    assert status == 415 and json.loads(data)["error"] == "not a PNG"
    blank = tmp_path / "blank.png"
    Image.new("L", (280, 280), 255).save(blank)
    status, data = request(server, "POST", "/predict", blank.read_bytes())
    assert status == 422 and "no ink found" in json.loads(data)["error"]
    status, data = request(server, "POST", "/predict", png[:-200])  # a PNG cut short
    assert status == 422 and "not a readable PNG" in json.loads(data)["error"]
    assert request(server, "GET", "/")[0] == 200
    assert request(server, "POST", "/predict", png)[0] == 200


def raw_request(server, head: str, wait_s: float = 5.0) -> tuple[int, dict]:
    """Send the request head alone and read the reply: a server that waits for a body it was not promised
    answers nothing within `wait_s`, and the test fails on the timeout."""
    import socket

    with socket.create_connection(server.server_address[:2], timeout=wait_s) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


@pytest.mark.parametrize(
    "length, status",
    [("-1", 400), ("abc", 400), ("+5", 400), ("1_000", 400), ("99999999999999999999", 400), (None, 411)],
)
def test_a_content_length_that_is_no_byte_count_is_refused_unread(server, length, status):
    host, port = server.server_address[:2]
    head = f"POST /predict HTTP/1.1\nHost: {host}:{port}\n" + (f"Content-Length: {length}\n" if length else "")
    code, answer = raw_request(server, head)
    assert code == status and "Content-Length" in answer["error"]


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "[::1]"])
def test_the_machines_own_names_for_it_are_answered(server, name, tmp_path):
    port = server.server_address[1]
    assert request(server, "GET", "/", headers={"Host": f"{name}:{port}"})[0] == 200
    png = stroke_png(tmp_path / "stroke.png")
    origin = {"Host": f"{name}:{port}", "Origin": f"http://{name}:{port}"}  # what a browser sends from the page
    assert request(server, "POST", "/predict", png, headers=origin)[0] == 200


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("host", ["rebound.example.com:{port}", "127.0.0.1:1", "localhost", "127.0.0.1.nip.io:{port}"])
def test_a_request_for_another_host_is_refused(server, method, host, tmp_path):
    """What a page gets that rebinds its own name to 127.0.0.1 (DNS rebinding): its name is the Host."""
    port = server.server_address[1]
    body = stroke_png(tmp_path / "stroke.png") if method == "POST" else None
    status, data = request(server, method, "/" if method == "GET" else "/predict", body,
                           headers={"Host": host.format(port=port)})  # fmt: skip
    assert status == 403 and b"<canvas" not in data
    assert json.loads(data)["error"] == f"this server answers to 127.0.0.1:{port}, not to {host.format(port=port)}"


@pytest.mark.parametrize(
    "origin", ["http://evil.example.com", "null", "https://127.0.0.1:{port}", "http://localhost:{port}"]
)
def test_a_post_from_another_origin_is_refused(server, origin, tmp_path):
    port = server.server_address[1]
    origin = origin.format(port=port)
    headers = {"Host": f"127.0.0.1:{port}", "Origin": origin}
    status, data = request(server, "POST", "/predict", stroke_png(tmp_path / "stroke.png"), headers=headers)
    assert status == 403 and json.loads(data)["error"] == f"a page of another origin ({origin}) may not post here"


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/../pyproject.toml"),
        ("GET", "/draw.py"),
        ("GET", "/predict"),
        ("POST", "/"),
        ("GET", "/mnist20k/draw.html"),
        ("GET", "/%2e%2e/README.md"),
    ],  # fmt: skip
)
def test_nothing_but_the_page_and_the_endpoint_is_served(server, method, path):
    status, data = request(server, method, path, b"" if method == "POST" else None)
    assert status == 404 and b"<html" not in data and b"[project]" not in data


def outside_references(page: str) -> list[str]:
    """Everything in the page that a browser would fetch from anywhere: an attribute naming a resource (src,
    href, action, ...) other than a fragment or inline data, a CSS url() or @import, and a fetch() of a URL that
    is not relative to the page."""
    import re
    from html.parser import HTMLParser

    found = []

    class Attributes(HTMLParser):
        def handle_starttag(self, tag, attrs):
            for name, value in attrs:
                if name in ("src", "href", "action", "srcset", "poster", "data", "formaction") and value is not None:
                    if not value.startswith(("#", "data:")):
                        found.append(f"<{tag} {name}={value!r}>")

    Attributes().feed(page)
    found += re.findall(r"url\(\s*['\"]?(?!data:|#)[^)]*\)|@import[^;]*", page)
    found += [url for url in re.findall(r"fetch\(\s*['\"`]([^'\"`]*)", page) if re.match(r"[a-z]+:|//|/", url)]
    return found


def test_the_page_is_self_contained(server):
    """It works offline and sends nothing anywhere but to this server: nothing in it is fetched from elsewhere."""
    status, page = request(server, "GET", "/")
    assert status == 200 and b"<canvas" in page
    assert outside_references(page.decode()) == []
    for added in ('<script defer src="//cdn.example.com/pad.js"></script>', '<link rel="stylesheet" href="x.css">',
                  "<style>body { background: url(https://example.com/p.png) }</style>",
                  '<img src="http://example.com/i.png">', 'fetch("https://example.com/log")'):  # fmt: skip
        assert outside_references(page.decode().replace("</body>", added + "</body>")), added


def test_a_port_in_use_is_one_line(server, run):
    port = server.server_address[1]
    result = runner.invoke(app, ["draw", str(run), "--port", str(port), "--no-browser", "--device", "cpu"])
    one_error_line(result, 1, f"port {port} is in use on 127.0.0.1: pick another with --port")


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# The background-networking flags: a closed network refuses Chromium's own connections, many at a time.
HEADLESS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
HEADLESS += ["--disable-component-update", "--disable-sync", "--window-size=900,800"]


def browser():
    """Headless Chromium from the system's packages, driven by Selenium through the system's chromedriver."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None
    if not (CHROMIUM and CHROMEDRIVER):
        return None
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in HEADLESS:
        options.add_argument(flag)
    # Chromium keeps a UNIX socket under $TMPDIR, and a socket's path may be at most 107 bytes: under a long
    # TMPDIR it cannot start ("Chrome instance exited"): it gets /tmp.
    env = {**os.environ, "TMPDIR": "/tmp"}
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER, env=env))


def test_a_stroke_drawn_in_a_browser_is_read(server, run, tmp_path):
    driver = browser()
    if driver is None:
        if os.environ.get("MNIST20K_BROWSER_TESTS") == "required":  # CI installs Chromium: there it must run
            pytest.fail("no Chromium and chromedriver, or no selenium, though MNIST20K_BROWSER_TESTS=required")
        pytest.skip("needs Chromium, chromedriver and selenium (.ci/run installs them)")
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        driver.get(server.url)
        pad = driver.find_element(By.ID, "pad")
        strokes = ActionChains(driver).move_to_element_with_offset(pad, -10, -110).click_and_hold()
        for _ in range(10):
            strokes = strokes.move_by_offset(2, 22)
        strokes.release().perform()
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "digit").text.strip())
        shown = int(driver.find_element(By.ID, "digit").text)
        bars = {int(b.get_attribute("data-digit")): float(b.get_attribute("data-p"))
                for b in driver.find_elements(By.CSS_SELECTOR, "#bars .bar")}  # fmt: skip
        drawing = driver.execute_script("return document.getElementById('pad').toDataURL('image/png')")
    finally:
        driver.quit()
    # the page shows what predict makes of the very picture drawn
    png = tmp_path / "drawn.png"
    png.write_bytes(base64.b64decode(drawing.split(",", 1)[1]))
    result = runner.invoke(app, ["predict", str(run), str(png), "--json", "--device", "cpu"])
    predicted = json.loads(result.stdout)
    assert shown == predicted["digit"] and sorted(bars) == list(range(10))
    assert bars[shown] == pytest.approx(predicted["top3"][0]["p"], abs=1e-9)


def test_a_client_that_resets_its_connection_mid_request_gets_no_traceback(run, capsys):
    """A tab closed in the middle of a request resets the connection: the server goes on and prints nothing."""
    import socket
    import struct

    server = DrawServer(rebuild(load_checkpoint(run), device=CPU).module, CPU, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sock = socket.create_connection(server.server_address[:2])
        sock.sendall(b"GET / HTTP/1.1\r\nHost: ")  # a request cut short ...
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # ... by a reset (RST), as a closed tab's
        assert request(server, "GET", "/")[0] == 200  # still serving
    finally:
        server.shutdown()
        server.server_close()  # joins the handler threads: every one has finished
    assert capsys.readouterr().err == ""


def test_ctrl_c_ends_it_with_exit_0_and_another_host_is_warned_of(run, spawn):
    import signal
    import subprocess
    import sys

    command = [sys.executable, "-m", "mnist20k", "draw", str(run), "--no-browser", "--port", "0", "--host", "0.0.0.0"]
    restore = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731 (as a terminal's job has it)
    proc = spawn(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=restore)
    output = Lines(proc.stdout)
    line = output.next(timeout=120)
    assert line and line.startswith("drawing page: http://0.0.0.0:"), line
    port = int(line.split(":")[3].split("/")[0])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/")
    reply = connection.getresponse()
    assert reply.status == 200 and reply.read()  # serving, so the Ctrl-C below lands where it would
    connection.close()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    stdout, stderr = output.rest(), proc.stderr.read()
    assert proc.returncode == 0 and stdout.strip() == "stopped", stdout + stderr
    assert stderr.strip() == "warning: serving on 0.0.0.0: anyone who can reach this machine can use the page"
