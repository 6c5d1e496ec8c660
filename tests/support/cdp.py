"""Drive real headless Chromium over the DevTools protocol: click, read the live DOM, resize.

`--dump-dom` shows a page once; clicking a link and reading what it opened needs a live tab.
This is the protocol Chromium itself serves (a WebSocket on loopback), spoken with aiohttp.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from browser import CHROMIUM_FLAGS


class Tab:
    """One page of a running Chromium."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.console: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self._socket:
            data = json.loads(message.data)
            if "id" in data and data["id"] in self._waiting:
                self._waiting.pop(data["id"]).set_result(data)
            elif data.get("method") == "Runtime.exceptionThrown":
                details = data["params"]["exceptionDetails"]
                self.console.append(str(details.get("exception", {}).get("description", details)))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        await self._socket.send_json({"id": ident, "method": method, "params": params})
        answer = await asyncio.wait_for(future, 60)
        assert "error" not in answer, f"{method}: {answer['error']}"
        return answer["result"]

    async def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if a promise)."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    async def until(self, expression: str, timeout: float = 30.0) -> Any:
        """Wait for an expression to be truthy in the page; its value (true for a node)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = await self.js(
                f"(() => {{ const v = ({expression}); return v instanceof Node || v; }})()"
            )
            if value:
                return value
            assert asyncio.get_running_loop().time() < deadline, (
                f"not true in {timeout}s: {expression}; page errors: {self.console}"
            )
            await asyncio.sleep(0.1)

    async def open(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.until("document.readyState === 'complete'")

    async def size(self, width: int, height: int) -> None:
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=width < 600,
        )

    async def click(self, selector: str) -> None:
        """A real mouse click (pressed and released) in the middle of the element."""
        box = await self.until(
            f"(() => {{ const n = document.querySelector({json.dumps(selector)});"
            " if (!n) return null;"
            " n.scrollIntoView({block: 'center'}); const r = n.getBoundingClientRect();"
            " return r.width ? [r.left + r.width / 2, r.top + r.height / 2] : null; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent",
                type=kind,
                x=box[0],
                y=box[1],
                button="left",
                clickCount=1,
            )

    async def key(self, key: str) -> None:
        codes = {"ArrowLeft": 37, "ArrowRight": 39, "Tab": 9, "Enter": 13}
        for kind in ("keyDown", "keyUp"):
            await self.send(
                "Input.dispatchKeyEvent",
                type=kind,
                key=key,
                code=key,
                windowsVirtualKeyCode=codes.get(key, 0),
            )

    async def screenshot(self, path: Path) -> bytes:
        data = base64.b64decode((await self.send("Page.captureScreenshot", format="png"))["data"])
        path.write_bytes(data)
        return data

    async def close(self) -> None:
        self._reader.cancel()
        await self._socket.close()


@asynccontextmanager
async def chromium_tab(binary: str, profile: Path) -> AsyncIterator[Tab]:
    """A headless Chromium with one blank tab, ended with its process group afterwards."""
    process = await asyncio.create_subprocess_exec(
        binary,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        "--hide-scrollbars",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert process.stderr is not None
        port = None
        seen = []
        async with asyncio.timeout(60):
            while port is None:
                line = (await process.stderr.readline()).decode(errors="replace")
                assert line, f"chromium exited before listening: {''.join(seen)[-2000:]}"
                seen.append(line)
                found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
                port = int(found.group(1)) if found else None
        drain = asyncio.create_task(_drain(process.stderr))
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                pages = [t for t in await response.json() if t["type"] == "page"]
            socket = await session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
            tab = Tab(socket)
            await tab.send("Page.enable")
            await tab.send("Runtime.enable")
            try:
                yield tab
            finally:
                await tab.close()
        drain.cancel()
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass
