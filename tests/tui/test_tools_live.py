"""The dashboard's port-forward against a real backend (local runtime): `F` on a
replica asks for the ports and forwards, the cluster view lists the forward with
its traffic, `W` lists forwards and `x` ends one."""

from __future__ import annotations

import asyncio
import json

from textual.widgets import Input

from ecotui.screens.forwards import ForwardsPanel, ForwardsScreen, PortForwardPrompt, registry
from support.tui_helpers import launch_body, live_app, screen_text, wait_for, wait_for_text

ECHO = (
    "exec python3 -c 'import os, socketserver\n"
    "class H(socketserver.BaseRequestHandler):\n"
    "    def handle(self):\n"
    "        while d := self.request.recv(65536): self.request.sendall(d)\n"
    "socketserver.ThreadingTCPServer.allow_reuse_address = True\n"
    'socketserver.ThreadingTCPServer(("127.0.0.1", int(os.environ["PORT"])), H)'
    ".serve_forever()'"
)


async def _echo(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    writer.write_eof()
    out = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return out


async def test_port_forward_from_the_replica_table(ecolink_server, api):
    r = api.post("/gpu-clusters", json=launch_body("fwd", replicas=2, command=ECHO))
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    app = live_app(ecolink_server.url, ecolink_server.key)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for_text(pilot, "● connected")
        await wait_for(pilot, lambda: "2/2" in screen_text(app), timeout=20, what="ready")
        # the replica's own port, as its environment says
        from ecotui.client.rest import EcoClient
        from ecotui.tools.runner import run_one

        client = EcoClient(ecolink_server.url, ecolink_server.key)
        out = await run_one(client, cid, "fwd-0", ["printenv", "PORT"])
        await client.aclose()
        port = int(out.stdout)
        await pilot.press("enter")  # the cluster view, replica table focused (fwd-0)
        await wait_for_text(pilot, "fwd-0")
        await pilot.press("F")
        await wait_for(pilot, lambda: isinstance(app.screen, PortForwardPrompt), what="prompt")
        app.screen.query_one("#remote", Input).value = "70000"
        await pilot.press("enter")
        await pilot.pause()
        assert "1 to 65535" in str(app.screen.query_one(".error").render())
        app.screen.query_one("#remote", Input).value = str(port)
        app.screen.query_one("#local", Input).value = ""
        await pilot.press("enter")
        reg = registry(app)
        await wait_for(pilot, lambda: len(reg.entries) == 1, timeout=15, what="the forward")
        entry = reg.entries[0]
        assert (
            await _echo(entry.forward.local, b"through the dashboard") == b"through the dashboard"
        )
        panel = app.screen.query_one(ForwardsPanel)
        await wait_for(
            pilot,
            lambda: "1 conn" in str(panel.render()),
            timeout=5,
            what="the forward in the cluster view",
        )
        text = str(panel.render())
        assert f"127.0.0.1:{entry.forward.local} → fwd-0:{port}" in text
        assert "in 21 B" in text and "out 21 B" in text
        # a port nothing listens on: refused with the reason, nothing started
        await pilot.press("F")
        await wait_for(pilot, lambda: isinstance(app.screen, PortForwardPrompt), what="prompt")
        app.screen.query_one("#remote", Input).value = str(ecolink_server.port)
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: (
                "nothing in fwd-0 listens" in json.dumps([n.message for n in app._notifications])
            ),
            timeout=10,
            what="the refusal",
        )
        assert len(reg.entries) == 1
        # W lists it, x ends it
        await pilot.press("W")
        await wait_for(pilot, lambda: isinstance(app.screen, ForwardsScreen), what="the list")
        await pilot.pause(0.2)
        await pilot.press("x")
        await wait_for(pilot, lambda: not reg.entries, timeout=5, what="the forward ended")
        try:
            ended = await _echo(entry.forward.local, b"x")
        except OSError:
            ended = b""
        assert ended == b""


async def test_upload_and_download_from_the_replica_table(ecolink_server, api, tmp_path):
    import os

    from ecotui.screens.copy_files import CopyScreen

    r = api.post("/gpu-clusters", json=launch_body("files", replicas=2))
    assert r.status_code == 201, r.text
    src = tmp_path / "model"
    src.mkdir()
    (src / "weights.bin").write_bytes(os.urandom(3 << 20))
    (src / "weights.bin").chmod(0o640)
    app = live_app(ecolink_server.url, ecolink_server.key)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for_text(pilot, "● connected")
        await wait_for(pilot, lambda: "2/2" in screen_text(app), timeout=20, what="ready")
        await pilot.press("enter")
        await wait_for_text(pilot, "files-0")
        await pilot.press("greater_than_sign")
        await wait_for(pilot, lambda: isinstance(app.screen, CopyScreen), what="upload prompt")
        screen = app.screen
        screen.query_one("#local", Input).value = str(src)
        screen.query_one("#remote", Input).value = "."
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: not isinstance(app.screen, CopyScreen), timeout=30, what="the upload"
        )
        assert screen.progress is not None and screen.progress.done >= 3 << 20
        assert screen.progress.total == 3 << 20
        assert "Uploaded" in (screen.result or "")

        out = tmp_path / "back"
        out.mkdir()
        await pilot.press("less_than_sign")
        await wait_for(pilot, lambda: isinstance(app.screen, CopyScreen), what="download prompt")
        screen = app.screen
        screen.query_one("#remote", Input).value = "model"
        screen.query_one("#local", Input).value = str(out)
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: not isinstance(app.screen, CopyScreen), timeout=30, what="the download"
        )
        got = out / "model" / "weights.bin"
        assert got.read_bytes() == (src / "weights.bin").read_bytes()
        assert got.stat().st_mode & 0o777 == 0o640

        # a path that does not exist: the error in the dialog, nothing written
        await pilot.press("less_than_sign")
        await wait_for(pilot, lambda: isinstance(app.screen, CopyScreen), what="download prompt")
        screen = app.screen
        screen.query_one("#remote", Input).value = "no-such-thing"
        screen.query_one("#local", Input).value = str(out)
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: "no such file" in str(screen.query_one(".error").render()),
            timeout=15,
            what="the error",
        )
        assert isinstance(app.screen, CopyScreen)
        assert sorted(p.name for p in out.iterdir()) == ["model"]
