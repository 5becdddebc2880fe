"""The proxy's own mechanics, in-process on loopback without Dagster: which names it allows, and that
what it forwards (methods, streamed bodies, raw paths, cookies, encodings, websockets) arrives unchanged.
The deployed proxy in front of ``dagster dev`` is tested in ``test_ui_proxy.py``."""

from __future__ import annotations

import asyncio
import gzip

import aiohttp
from aiohttp import web
from yarl import URL

from pipelines.runtime.ui_proxy import allowed_authorities, create_app
from tests.conftest import _free_port


def test_allowed_names_come_from_the_environment_variable():
    allowed = allowed_authorities(3000, "a.example, B.example:8443,")
    assert {"127.0.0.1", "127.0.0.1:3000", "localhost:3000", "[::1]", "[::1]:3000", "a.example",
            "a.example:3000", "b.example:8443"} <= allowed
    assert not {"b.example", "evil.example", "127.0.0.1:3001", ""} & allowed


async def _through_the_proxy_to_an_echo_server() -> dict:
    """The proxy app in front of a loopback echo server: what reaches the server, what comes back."""
    seen, payload = {}, gzip.compress(b"dagster" * 1000)

    async def echo(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse(protocols=["graphql-ws"])
            await ws.prepare(request)
            async for message in ws:
                await (ws.send_bytes if message.type == aiohttp.WSMsgType.BINARY else ws.send_str)(message.data)
            return ws
        seen[request.method] = {"path": request.raw_path, "host": request.host,
                                "cookie": request.headers.get("Cookie"), "size": len(await request.read())}
        response = web.Response(body=payload, headers={"Content-Encoding": "gzip"})
        response.set_cookie("a", "1")
        response.set_cookie("b", "2")
        return response

    echo_app = web.Application(client_max_size=2**30)
    echo_app.router.add_route("*", "/{tail:.*}", echo)
    port, echo_port, runners = _free_port(), _free_port(), []
    proxy_app = create_app(f"http://127.0.0.1:{echo_port}", "/p", allowed_authorities(port))
    try:
        for app, at in ((echo_app, echo_port), (proxy_app, port)):
            runners.append(web.AppRunner(app))
            await runners[-1].setup()
            await web.TCPSite(runners[-1], "127.0.0.1", at).start()

        async def chunks():
            for _ in range(80):
                yield b"x" * 65536
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            url = URL(f"http://127.0.0.1:{port}/p/a%2Fb?c=%26", encoded=True)
            async with session.put(url, data=chunks(), headers={"Cookie": "s=1"}) as put:  # chunked upload
                seen["response"] = {"body": await put.read(), "encoding": put.headers.get("Content-Encoding"),
                                    "cookies": put.headers.getall("Set-Cookie", [])}
            async with session.delete(f"http://127.0.0.1:{port}/p/x") as deleted:
                seen["deleted"] = deleted.status
            async with session.ws_connect(f"http://127.0.0.1:{port}/p/graphql", protocols=["graphql-ws"]) as ws:
                await ws.send_bytes(b"\x00\x01")
                await ws.send_str("text")
                seen["ws"] = (ws.protocol, (await ws.receive()).data, (await ws.receive()).data)
        return {**seen, "payload": payload, "port": port}
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


def test_methods_streamed_bodies_cookies_encodings_and_websockets_pass_unchanged():
    seen = asyncio.run(_through_the_proxy_to_an_echo_server())
    assert seen["PUT"] == {"path": "/p/a%2Fb?c=%26", "host": f"127.0.0.1:{seen['port']}", "cookie": "s=1",
                           "size": 80 * 65536}
    assert seen["response"]["body"] == seen["payload"] and seen["response"]["encoding"] == "gzip"
    assert [c.split(";")[0] for c in seen["response"]["cookies"]] == ["a=1", "b=2"]
    assert seen["deleted"] == 200 and "DELETE" in seen
    assert seen["ws"] == ("graphql-ws", b"\x00\x01", "text")


async def _redirects(paths: list[tuple[str, str]]) -> list[tuple[int, str | None]]:
    """(status, Location) of each (method, path) sent to the proxy outside its prefix /p."""
    port, runner = _free_port(), None
    try:
        runner = web.AppRunner(create_app(f"http://127.0.0.1:{_free_port()}", "/p", allowed_authorities(port)))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        async with aiohttp.ClientSession() as session:
            answers = []
            for method, path in paths:
                async with session.request(method, URL(f"http://127.0.0.1:{port}{path}", encoded=True),
                                           allow_redirects=False) as response:
                    answers.append((response.status, response.headers.get("Location")))
            return answers
    finally:
        if runner is not None:
            await runner.cleanup()


def test_links_from_mlflow_to_run_and_asset_pages_reach_the_ui_under_its_prefix():
    answers = asyncio.run(_redirects([("GET", "/"), ("GET", "/runs/abc-123"), ("GET", "/assets/a/b?view=x"),
                                      ("GET", "/graphql?query=%7Bversion%7D"), ("POST", "/runs/abc-123"),
                                      ("GET", "/server_info")]))
    assert answers == [(307, "/p/"), (307, "/p/runs/abc-123"), (307, "/p/assets/a/b?view=x"),
                       (404, None), (404, None), (404, None)]  # GraphQL and the API stay behind the prefix
