"""The Dagster UI behind a Host-checking reverse proxy (issue #18: DNS rebinding).

dagster-webserver answers any ``Host``: a page on evil.example that rebinds its name to 127.0.0.1 can
drive the local UI and its GraphQL API (launch runs, wipe assets), and a cross-site form POST can run a
mutation from the query string. The webserver has no allowed-hosts option, and building its app in
process needs Dagster's private workspace internals, so ``make ui`` runs a stock ``dagster dev`` (webserver
and daemon) behind this proxy:

* the proxy (default 127.0.0.1:3000) answers 403, before forwarding anything, to a ``Host`` outside the
  allow-list (127.0.0.1, localhost, [::1], bare or with the port, plus the comma-separated names in
  ``LLM_LINEAGE_UI_ALLOWED_HOSTS``) and, for websockets and state-changing methods, to a foreign
  ``Origin`` (cross-site requests that carry an allowed Host);
* ``dagster dev`` listens on 127.0.0.1 under a random path prefix chosen per start (it has no
  ``--path-prefix``; its webserver reads ``DAGSTER_WEBSERVER_PATH_PREFIX`` from the environment it
  inherits), on a port browsers refuse to fetch from (the Fetch standard's "bad ports"): a rebinding
  page cannot reach it, nor the inner ``/``, which redirects to the prefix and so would reveal it;
* the proxy serves the same prefix (links, assets and the UI's routing work unchanged) and forwards
  HTTP (bodies streamed) and websockets (GraphQL subscriptions, ``graphql-ws``) as they are. Outside the
  prefix it answers only ``GET /`` and ``GET`` of the run and asset pages that MLflow links to (redirects
  under the prefix, so those links outlive a restart), so a cross-site request cannot reach GraphQL
  without knowing the prefix.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
from aiohttp import web
from yarl import URL

from pipelines.runtime.orphans import PARENT_PID_ENV

ALLOWED_HOSTS_ENV = "LLM_LINEAGE_UI_ALLOWED_HOSTS"
PATH_PREFIX_ENV = "DAGSTER_WEBSERVER_PATH_PREFIX"  # dagster-webserver reads its options from DAGSTER_WEBSERVER_*
DEFAULT_HOSTS = ("127.0.0.1", "localhost", "[::1]")
# Ports above 1023 on the Fetch standard's bad-port list (https://fetch.spec.whatwg.org/#bad-port):
# browsers fail any request to them, so a page cannot talk to the inner webserver even on loopback.
BROWSER_BLOCKED_PORTS = (10080, 6665, 6666, 6667, 6668, 6669, 6679, 6697, 6566, 4190, 3659, 4045,
                         1719, 1720, 1723, 2049, 5060, 5061, 6000)
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"})
WS_HANDSHAKE = frozenset({"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
                          "sec-websocket-protocol", "sec-websocket-accept"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# UI pages that MLflow runs and model versions link to (dagster.run_url, dagster.asset_url tags): pages of
# the web app only, redirected under the prefix like "/" (which reveals the prefix as much)
LINKED_PAGES = ("/runs/", "/assets/")
UNSENDABLE_CLOSE_CODES = frozenset({1005, 1006, 1015})  # reserved: reported locally, never sent
STOP_TIMEOUT_S = 30
SESSION = web.AppKey("session", aiohttp.ClientSession)


def _has_port(authority: str) -> bool:
    host, sep, port = authority.rpartition(":")
    return bool(sep) and port.isdigit() and (":" not in host or host.endswith("]"))


def allowed_authorities(port: int, extra: str | None = None) -> frozenset[str]:
    """``Host`` values to accept: each name bare and with ``port``; a name given with a port, as given.
    ``extra`` (default: ``$LLM_LINEAGE_UI_ALLOWED_HOSTS``) is a comma-separated list of more names."""
    extra = os.environ.get(ALLOWED_HOSTS_ENV, "") if extra is None else extra
    allowed: set[str] = set()
    for name in (n.strip().lower() for n in (*DEFAULT_HOSTS, *extra.split(","))):
        if name:
            allowed.add(name)
            if not _has_port(name):
                allowed.add(f"{name}:{port}")
    return frozenset(allowed)


def _is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def refusal(request: web.Request, allowed: frozenset[str]) -> str | None:
    """Why the request is refused, or None. The Host check stops DNS rebinding (the page's own name);
    the Origin check stops other sites' pages that address us by an allowed name."""
    host = request.headers.get("Host", "")
    if host.lower() not in allowed:
        return (f"Host {host[:100]!r} is not allowed here (DNS-rebinding protection). Open the UI as "
                f"http://127.0.0.1:<port>/ or add the name to {ALLOWED_HOSTS_ENV}.")
    origin = request.headers.get("Origin")
    if origin is not None and (request.method not in SAFE_METHODS or _is_websocket(request)):
        try:
            authority = URL(origin).raw_authority.lower()
        except ValueError:
            authority = ""
        if authority not in allowed:
            return f"Origin {origin[:100]!r} is not allowed here (cross-site request)."
    return None


def _forward_headers(headers, drop: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """The client's headers minus hop-by-hop ones; ``Host`` stays, so redirects name the proxy."""
    return [(k, v) for k, v in headers.items() if k.lower() not in HOP_BY_HOP and k.lower() not in drop]


async def _proxy_http(request: web.Request, url: URL) -> web.StreamResponse:
    try:
        upstream = await request.app[SESSION].request(
            request.method, url, headers=_forward_headers(request.headers), allow_redirects=False,
            data=request.content if request.body_exists else None)
    except aiohttp.ClientError as error:
        return web.Response(status=502, text=f"Dagster webserver unreachable ({error}); still starting?\n")
    async with upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():  # repeated ones (Set-Cookie) kept
            if name.lower() not in HOP_BY_HOP:
                response.headers.add(name, value)
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():  # compressed bytes as they come (auto_decompress off)
            await response.write(chunk)
        await response.write_eof()
    return response


async def _pipe(source, sink) -> None:
    async for message in source:
        if message.type == aiohttp.WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type == aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(message.data)
    code = source.close_code
    await sink.close(code=code if code and code not in UNSENDABLE_CLOSE_CODES else 1000)


async def _proxy_websocket(request: web.Request, url: URL) -> web.StreamResponse:
    """Connect upstream first with the client's subprotocols (``graphql-ws``), then accept the client
    with the one the webserver chose, and relay messages both ways until either side closes."""
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    try:
        upstream = await request.app[SESSION].ws_connect(
            url, protocols=protocols, headers=_forward_headers(request.headers, WS_HANDSHAKE), max_msg_size=0)
    except aiohttp.WSServerHandshakeError as error:
        return web.Response(status=error.status, text=f"Dagster webserver refused the websocket: {error.message}\n")
    except aiohttp.ClientError as error:
        return web.Response(status=502, text=f"Dagster webserver unreachable ({error}); still starting?\n")
    async with upstream:
        client = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else [], max_msg_size=0)
        await client.prepare(request)
        pipes = [asyncio.create_task(_pipe(client, upstream)), asyncio.create_task(_pipe(upstream, client))]
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for pipe in pipes:
            pipe.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        await client.close()
    return client


def create_app(upstream: str, prefix: str, allowed: frozenset[str]) -> web.Application:
    """The proxy: ``upstream`` is the inner webserver's base URL, ``prefix`` its path prefix."""

    async def handle(request: web.Request) -> web.StreamResponse:
        reason = refusal(request, allowed)
        if reason is not None:
            return web.Response(status=403, text=f"403 Forbidden: {reason}\n")
        path = request.raw_path.split("?", 1)[0]
        if path != prefix and not path.startswith(prefix + "/"):
            if request.method in ("GET", "HEAD") and (path == "/" or path.startswith(LINKED_PAGES)):
                raise web.HTTPTemporaryRedirect(prefix + request.raw_path)
            return web.Response(status=404, text="Not found: the Dagster UI starts at /\n")
        url = URL(upstream + request.raw_path, encoded=True)
        return await (_proxy_websocket if _is_websocket(request) else _proxy_http)(request, url)

    async def client_session(app: web.Application):
        # no cookie jar: the proxy must not keep one client's cookies and send them for another
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
                                         timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)) as session:
            app[SESSION] = session
            yield

    app = web.Application()
    app.cleanup_ctx.append(client_session)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def pick_inner_port(host: str = "127.0.0.1") -> int:
    """A free port that browsers refuse to fetch from, at random; a random free port if none is free."""
    candidates = list(BROWSER_BLOCKED_PORTS)
    secrets.SystemRandom().shuffle(candidates)
    for port in (*candidates, 0):
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            if port == 0:
                print("ui_proxy: every browser-blocked port is taken; the inner webserver uses a random one",
                      file=sys.stderr)
            return sock.getsockname()[1]
    raise OSError(f"no free port on {host}")


# Runs in the child before it becomes `dagster dev`: the kernel sends it SIGINT (its clean shutdown of
# webserver and daemon) if the proxy dies, even by SIGKILL; SIGINT is not left ignored (as it is for
# a background job of a shell); the parent-pid variable is not passed on.
_TRAMPOLINE = ("import os, signal, sys; from pipelines.runtime.orphans import die_with_parent, PARENT_PID_ENV; "
               "signal.signal(signal.SIGINT, signal.SIG_DFL); die_with_parent(signal.SIGINT); "
               "os.environ.pop(PARENT_PID_ENV, None); os.execv(sys.argv[1], sys.argv[1:])")


def start_dagster(workspace: str, port: int, prefix: str) -> subprocess.Popen:
    """``dagster dev`` (webserver + daemon) on 127.0.0.1:``port`` under ``prefix``, in its own process group."""
    dagster = str(Path(sys.executable).with_name("dagster"))
    return subprocess.Popen(
        [sys.executable, "-c", _TRAMPOLINE, dagster, "dev", "-w", workspace, "--host", "127.0.0.1",
         "--port", str(port)],
        env={**os.environ, PATH_PREFIX_ENV: prefix, PARENT_PID_ENV: str(os.getpid())}, start_new_session=True)


def stop_dagster(process: subprocess.Popen, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGINT to the group (what Ctrl-C does to a plain ``dagster dev``), SIGKILL for what is left of it."""
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout_s)
    except (ProcessLookupError, subprocess.TimeoutExpired, KeyboardInterrupt):  # a second Ctrl-C: stop waiting
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # code servers or steps that outlived dagster dev
    except ProcessLookupError:
        pass
    process.wait()


async def _announce_when_ready(inner_url: str, public_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"{inner_url}/server_info") as response:
                    if response.status == 200:
                        print(f"ui_proxy: Dagster UI on {public_url}", flush=True)
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(1)


async def serve(sock: socket.socket, app: web.Application, process: subprocess.Popen, inner_url: str,
                public_url: str) -> None:
    """Serve ``app`` on ``sock`` until SIGINT/SIGTERM or until ``process`` exits."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    announce = asyncio.create_task(_announce_when_ready(inner_url, public_url))
    try:
        while not stop.is_set() and process.poll() is None:
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass
    finally:
        announce.cancel()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.runtime.ui_proxy", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address the proxy listens on")
    parser.add_argument("--port", type=int, default=3000, help="port the proxy listens on")
    parser.add_argument("-w", "--workspace", default="workspace.yaml", help="workspace file for dagster dev")
    args = parser.parse_args(argv)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.create_server((args.host, args.port), family=family)  # fail before starting Dagster
    prefix = "/ui-" + secrets.token_hex(16)
    inner_port = pick_inner_port()
    print(f"ui_proxy: proxy on {args.host}:{args.port}, inner dagster-webserver on 127.0.0.1 port {inner_port} "
          "under a secret path prefix", flush=True)
    process = start_dagster(args.workspace, inner_port, prefix)
    display_host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    try:
        asyncio.run(serve(sock, create_app(f"http://127.0.0.1:{inner_port}", prefix, allowed_authorities(args.port)),
                          process, f"http://127.0.0.1:{inner_port}{prefix}", f"http://{display_host}:{args.port}/"))
    finally:
        exited = process.poll()
        stop_dagster(process)
    if exited is not None:
        print(f"ui_proxy: dagster dev exited with {exited}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
