"""``Server-Timing: app;dur=<ms>`` on every HTTP response: the time the app took from the
request's arrival to its response headers (routing, authentication, the queries, rendering a
page or encoding JSON; for a streamed download, until its first bytes). Browsers show it in
their developer tools; benchmarks/ui_latency.py reads it as the server-side time of a page.
Plain ASGI, outermost, so every other layer is inside the figure."""

from __future__ import annotations

import time


class ServerTiming:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()

        async def timed_send(message) -> None:
            if message["type"] == "http.response.start":
                dur = (time.perf_counter() - start) * 1000
                message["headers"] = [*message.get("headers", ()),
                                      (b"server-timing", f"app;dur={dur:.2f}".encode())]
            await send(message)

        await self.app(scope, receive, timed_send)
