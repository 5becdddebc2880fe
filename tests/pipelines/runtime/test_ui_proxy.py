"""The Dagster UI behind the Host-checking proxy (issue #18, DNS rebinding): ``python -m
pipelines.runtime.ui_proxy`` started for real on loopback as ``make ui`` runs it (``dagster dev`` behind it),
on a temporary DAGSTER_HOME, then driven over HTTP and websockets with allowed and foreign names.

``foreign_host_refusals`` is the check that a plain ``dagster dev`` (the Makefile before) fails: it answers
a foreign ``Host`` with 200 and runs the GraphQL mutation."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import dagster as dg
import dagster_webserver
import psutil
import pytest
import requests

from pipelines.definitions import PROJECT_ROOT
from pipelines.runtime.ui_proxy import ALLOWED_HOSTS_ENV, BROWSER_BLOCKED_PORTS
from tests.conftest import _free_port
from tests.ui_server import LOCATIONS

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

START_TIMEOUT_S = 300
STOP_TIMEOUT_S = 90
EXTRA_NAME = "ui.example"  # given through LLM_LINEAGE_UI_ALLOWED_HOSTS, as behind a named proxy
PAUSED = "{ instance { autoMaterializePaused } }"
PAUSE = "mutation { setAutoMaterializePaused(paused: %s) }"
DAEMONS = "{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }"
RUN_LOGS = 'subscription { pipelineRunLogs(runId: "no-such-run") { __typename } }'


@dataclass
class ProxiedUI:
    process: subprocess.Popen
    port: int
    log_path: Path
    prefix: str = ""
    inner_port: int = 0
    family: set[int] = field(default_factory=set)  # pids of the proxy's descendants, for the clean-up

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}{path}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def remember_children(self) -> None:
        try:
            self.family |= {p.pid for p in psutil.Process(self.process.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            pass

    def graphql(self, query: str, host: str | None = None, **kwargs) -> requests.Response:
        return requests.post(self.url("/graphql"), json={"query": query},
                             headers={"Host": host or f"127.0.0.1:{self.port}", **kwargs.pop("headers", {})},
                             timeout=60, **kwargs)

    def data(self, query: str) -> dict:
        response = self.graphql(query)
        assert response.status_code == 200, response.text
        body = response.json()
        assert not body.get("errors"), body
        return body["data"]


def foreign_host_refusals(base_url: str, port: int, graphql_url: str, paused: Callable[[], bool]) -> list[str]:
    """What a DNS-rebinding page could do that it must not: [] when every foreign-Host request is refused."""
    problems = []
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}"):
        response = requests.get(f"{base_url}/server_info", headers={"Host": host}, timeout=30)
        if response.status_code != 403 or "dagster_version" in response.text:
            problems.append(f"GET /server_info with Host {host}: {response.status_code} {response.text[:120]}")
    before = paused()
    response = requests.post(graphql_url, json={"query": PAUSE % json.dumps(not before)}, timeout=30,
                             headers={"Host": f"evil.example:{port}"})
    if response.status_code != 403:
        problems.append(f"POST /graphql setAutoMaterializePaused with a foreign Host: {response.status_code} "
                        f"{response.text[:120]}")
    if paused() != before:
        problems.append(f"the mutation sent with a foreign Host toggled autoMaterializePaused to {not before}")
    return problems


def _start(tmp: Path) -> ProxiedUI:
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "LLM_LINEAGE_HOME": str(tmp / "lineage"),
           "LLM_LINEAGE_PROFILE": "smoke", "HF_HUB_OFFLINE": "1", ALLOWED_HOSTS_ENV: EXTRA_NAME}
    log_path = tmp / "ui_proxy.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.runtime.ui_proxy", "-w", "workspace.yaml", "--host", "127.0.0.1",
             "--port", str(port := _free_port())],
            cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return ProxiedUI(process, port, log_path)


def _wait_until_loaded(ui: ProxiedUI) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while "ui_proxy: Dagster UI on" not in ui.log():
        ui.remember_children()
        assert ui.process.poll() is None, f"ui_proxy exited:\n{ui.log()[-3000:]}"
        assert time.monotonic() < deadline, f"no UI after {START_TIMEOUT_S}s:\n{ui.log()[-3000:]}"
        time.sleep(1)
    ui.inner_port = int(re.search(r"inner dagster-webserver on 127\.0\.0\.1 port (\d+)", ui.log()).group(1))
    redirect = requests.get(ui.url("/"), allow_redirects=False, timeout=30)
    assert redirect.status_code == 307, redirect.text
    ui.prefix = redirect.headers["Location"].rstrip("/")
    while True:
        ui.remember_children()
        entries = ui.data(LOCATIONS)["workspaceOrError"]["locationEntries"]
        if entries and all(e["loadStatus"] == "LOADED" for e in entries):
            return
        assert time.monotonic() < deadline, f"code location not loaded: {entries}\n{ui.log()[-3000:]}"
        time.sleep(1)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _stop(ui: ProxiedUI) -> int | None:
    """SIGINT to the proxy (Ctrl-C under ``make ui``); then SIGKILL, by pid, whatever it left behind."""
    ui.remember_children()
    code = None
    if ui.process.poll() is None:
        ui.process.send_signal(signal.SIGINT)
        try:
            code = ui.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            ui.process.kill()
            ui.process.wait()
    leftovers = [pid for pid in ui.family if _alive(pid)]
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return code if not leftovers else None


@pytest.fixture(scope="module")
def proxied_ui(tmp_path_factory):
    ui = _start(tmp_path_factory.mktemp("ui_proxy"))
    try:
        _wait_until_loaded(ui)
        yield ui
    finally:
        _stop(ui)


def test_a_foreign_host_is_refused_before_anything_is_forwarded(proxied_ui):
    ui = proxied_ui
    problems = foreign_host_refusals(ui.url(), ui.port, ui.url("/graphql"),
                                     lambda: ui.data(PAUSED)["instance"]["autoMaterializePaused"])
    assert problems == []
    refused = requests.get(ui.url("/server_info"), headers={"Host": "evil.example"}, timeout=30)
    assert refused.status_code == 403 and "DNS-rebinding" in refused.text
    assert refused.headers["Server"] != "uvicorn"  # answered by the proxy, not by the webserver
    assert requests.get(f"http://127.0.0.1:{ui.port}/", headers={"Host": "evil.example"},
                        allow_redirects=False, timeout=30).status_code == 403  # the prefix is not revealed


def test_allowed_hosts_reach_dagster(proxied_ui):
    ui = proxied_ui
    for host in ("127.0.0.1", f"127.0.0.1:{ui.port}", "localhost", f"localhost:{ui.port}", f"[::1]:{ui.port}",
                 EXTRA_NAME, f"{EXTRA_NAME}:{ui.port}"):
        response = requests.get(ui.url("/server_info"), headers={"Host": host}, timeout=30)
        assert response.status_code == 200, (host, response.text)
        assert response.json()["dagster_version"] == dg.__version__, host


def test_graphql_post_and_mutation_through_the_proxy(proxied_ui):
    ui = proxied_ui
    assert ui.data("{ version }")["version"] == dg.__version__
    # the control for the refused mutation above: allowed, it does change the instance
    before = ui.data(PAUSED)["instance"]["autoMaterializePaused"]
    try:
        ui.data(PAUSE % json.dumps(not before))
        assert ui.data(PAUSED)["instance"]["autoMaterializePaused"] is (not before)
    finally:
        ui.data(PAUSE % json.dumps(before))
    assert ui.data(PAUSED)["instance"]["autoMaterializePaused"] is before


def test_cross_site_requests_with_an_allowed_host_are_refused(proxied_ui):
    """The CSRF shape: another site's page posts to 127.0.0.1 (an allowed Host) with its own Origin; a
    text/plain POST carrying the query in the URL is what Dagster would execute."""
    ui = proxied_ui
    before = ui.data(PAUSED)["instance"]["autoMaterializePaused"]
    toggle = PAUSE % json.dumps(not before)
    response = ui.graphql(toggle, headers={"Origin": "http://evil.example"})
    assert response.status_code == 403 and "cross-site" in response.text
    simple = requests.post(ui.url("/graphql"), params={"query": toggle}, data="x",
                           headers={"Content-Type": "text/plain", "Origin": "null"}, timeout=30)
    assert simple.status_code == 403
    assert ui.data(PAUSED)["instance"]["autoMaterializePaused"] is before
    same_origin = ui.graphql("{ version }", headers={"Origin": f"http://127.0.0.1:{ui.port}"})
    assert same_origin.status_code == 200 and same_origin.json()["data"]["version"] == dg.__version__
    # outside the secret prefix the proxy forwards nothing, so a page cannot reach GraphQL without it
    assert requests.post(f"http://127.0.0.1:{ui.port}/graphql", json={"query": "{ version }"},
                         timeout=30).status_code == 404
    assert requests.get(f"http://127.0.0.1:{ui.port}/server_info", timeout=30).status_code == 404


async def _subscribe(url: str, host: str, origin: str | None = None) -> tuple[str | None, list[dict]]:
    headers = {"Host": host, **({"Origin": origin} if origin else {})}
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, protocols=["graphql-ws"], headers=headers) as ws:
            await ws.send_json({"type": "connection_init", "payload": {}})
            await ws.send_json({"id": "1", "type": "start", "payload": {"query": RUN_LOGS}})
            messages = []
            async with asyncio.timeout(60):
                while not any(m.get("type") == "data" for m in messages):
                    messages.append(json.loads((await ws.receive_str())))
            return ws.protocol, messages


def test_graphql_websocket_through_the_proxy(proxied_ui):
    ui = proxied_ui
    ws_url = ui.url("/graphql").replace("http://", "ws://")
    protocol, messages = asyncio.run(_subscribe(ws_url, f"127.0.0.1:{ui.port}", f"http://127.0.0.1:{ui.port}"))
    assert protocol == "graphql-ws"
    assert messages[0]["type"] == "connection_ack"
    assert messages[-1]["payload"]["data"]["pipelineRunLogs"]["__typename"] == "PipelineRunLogsSubscriptionFailure"
    for host, origin in (("evil.example", None), (f"evil.example:{ui.port}", f"http://evil.example:{ui.port}"),
                         (f"127.0.0.1:{ui.port}", "http://evil.example")):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            asyncio.run(_subscribe(ws_url, host, origin))
        assert refused.value.status == 403, (host, origin)


def test_the_ui_page_and_its_assets_load_under_the_prefix(proxied_ui):
    ui = proxied_ui
    page = requests.get(f"http://127.0.0.1:{ui.port}/", timeout=30)  # follows the redirect to the prefix
    assert page.status_code == 200 and page.url == ui.url("/")
    scripts = re.findall(r'src="([^"]+\.js)"', page.text)
    assert scripts and all(s.startswith(f"{ui.prefix}/_next/") for s in scripts), scripts
    build = Path(dagster_webserver.__file__).parent / "webapp" / "build"
    for script in scripts:  # byte for byte what the webserver ships (gzip-encoded on the way)
        response = requests.get(f"http://127.0.0.1:{ui.port}{script}", timeout=60)
        assert response.status_code == 200, script
        assert response.content == (build / script.removeprefix(f"{ui.prefix}/")).read_bytes(), script
    deep_link = requests.get(ui.url("/runs"), timeout=30)  # the UI's router serves every page from index.html
    assert deep_link.status_code == 200 and f"{ui.prefix}/_next/" in deep_link.text


def test_a_browser_uses_the_ui_and_a_rebound_name_gets_nothing(proxied_ui):
    """Chromium as people use it: the asset graph renders through the proxy and the UI's GraphQL websocket
    connects; with evil.example resolved to 127.0.0.1 (the rebinding shape) it gets the 403 page, and nothing
    from the inner webserver without its secret prefix."""
    from playwright.sync_api import Error as PlaywrightError, sync_playwright

    ui = proxied_ui
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} missing: `make setup` installs Debian's chromium (apt-get install chromium)")
    args = [*CHROMIUM_ARGS, "--host-resolver-rules=MAP evil.example 127.0.0.1"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(120_000)
            page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda skip: skip.click())
            sockets, frames = [], []

            def on_websocket(socket):
                sockets.append(socket)
                socket.on("framereceived", lambda payload: frames.append(str(payload)))

            page.on("websocket", on_websocket)
            page.goto(f"http://127.0.0.1:{ui.port}/")
            page.goto(ui.url("/asset-groups"))
            page.get_by_text("Global asset lineage").wait_for()
            for group in ("raw", "datasets", "checkpoints", "evals"):  # the graph came through GraphQL
                page.get_by_text(group, exact=True).first.wait_for()
            deadline = time.monotonic() + 60
            while not any("connection_ack" in frame for frame in frames):
                assert time.monotonic() < deadline, ([s.url for s in sockets], frames)
                page.wait_for_timeout(500)
            assert {s.url for s in sockets} == {f"ws://127.0.0.1:{ui.port}{ui.prefix}/graphql"}

            rebound = page.goto(f"http://evil.example:{ui.port}/")
            assert rebound.status == 403 and "DNS-rebinding" in page.inner_text("body")
            # The rebound name on the inner port reaches nothing either: the browser refuses the port where its
            # build blocks it (ERR_UNSAFE_PORT), and otherwise the webserver answers 404 without the secret prefix.
            try:
                inner = page.goto(f"http://evil.example:{ui.inner_port}/")
            except PlaywrightError as refused:
                assert "ERR_UNSAFE_PORT" in str(refused), refused
            else:
                assert inner.status == 404 and "Global asset lineage" not in page.content()
        finally:
            browser.close()


def test_the_inner_webserver_serves_nothing_without_its_prefix(proxied_ui):
    ui = proxied_ui
    assert ui.inner_port in BROWSER_BLOCKED_PORTS  # browsers refuse to fetch from it
    inner = f"http://127.0.0.1:{ui.inner_port}"
    assert requests.get(f"{inner}{ui.prefix}/server_info", timeout=30).status_code == 200  # it is the webserver
    assert requests.get(f"{inner}/server_info", timeout=30).status_code == 404
    assert requests.post(f"{inner}/graphql", json={"query": "{ version }"}, timeout=30).status_code == 404
    listening = set()
    for pid in ui.family:
        try:
            listening |= {(c.laddr.ip, c.laddr.port) for c in psutil.Process(pid).net_connections("tcp")
                          if c.status == psutil.CONN_LISTEN}
        except psutil.NoSuchProcess:
            pass
    listening |= {(c.laddr.ip, c.laddr.port) for c in psutil.Process(ui.process.pid).net_connections("tcp")
                  if c.status == psutil.CONN_LISTEN}
    assert {("127.0.0.1", ui.port), ("127.0.0.1", ui.inner_port)} <= listening
    assert all(ip in ("127.0.0.1", "::1") for ip, _ in listening), listening


def test_the_daemon_runs_next_to_the_webserver(proxied_ui):
    ui = proxied_ui
    deadline = time.monotonic() + 120
    while True:
        statuses = {s["daemonType"]: s for s in ui.data(DAEMONS)["instance"]["daemonHealth"]["allDaemonStatuses"]}
        if statuses.get("SENSOR", {}).get("healthy") and statuses.get("ASSET", {}).get("healthy"):
            return
        assert time.monotonic() < deadline, statuses
        time.sleep(2)


def test_stopping_the_proxy_stops_dagster(proxied_ui):
    """Last: Ctrl-C (SIGINT) stops the proxy, dagster dev, its webserver, daemon and code server."""
    ui = proxied_ui
    ui.remember_children()
    assert len(ui.family) >= 3, ui.family  # dagster dev, webserver, daemon (and code servers)
    assert _stop(ui) == 0, ui.log()[-3000:]
    with pytest.raises(requests.ConnectionError):
        requests.get(ui.url("/server_info"), timeout=10)
