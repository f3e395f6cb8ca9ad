"""What the live page reads of the operator API's actor (the status from its cached rows, in
columns; the journal's events; the series), and the page started beside the API's socket."""

from __future__ import annotations

from typing import Any

from loguru import logger

from actors.messages import ActorFailed, ConfigureApi, Event
from supervisor.api.protocol import encode
from supervisor.dashboard.server import DashboardServer
from supervisor.dashboard.token import TokenError, fresh_token

PAGE_FIELDS = ("symbol", "state", "side", "requested_qty", "filled_qty", "entry_price", "stop_price", "take_profit",
               "trail_pct", "naked_now", "naked_since", "last_event")


class ActorPageSource:
    """What the live page reads of the API's actor: its status, from the rows it keeps encoded;
    the journal's events, through `journal` (the actor's own reader); its series."""

    def __init__(self, actor: Any, journal: Any) -> None:
        self.actor = actor
        self.journal = journal

    async def status_text(self) -> str:
        if self.actor.header is not None:
            return await self.actor._status_encoded(True, PAGE_FIELDS)
        status = await self.actor._status(False)
        rows = [[p[f] for f in PAGE_FIELDS] for p in status["positions"]]
        status["positions"] = {"columns": list(PAGE_FIELDS), "rows": rows}
        return encode(status).decode()

    async def read(self, since: int, limit: int) -> tuple[list[Event], int, int]:
        return await self.journal.read(since, limit)

    def series(self) -> dict[str, Any]:
        return self.actor.series.as_json()


def serve_page(actor: Any, journal: Any, msg: ConfigureApi, sender: Any) -> bool:
    """The live page, on the API actor's loop beside its socket. While the deployment starts,
    its failure is the API's (said, not hidden: the deployment does not start without the page
    its config asks for); once deployed, a replaced API whose port is taken keeps its socket --
    the operator's way in -- and says the page is down (a restart loop would lose both)."""
    assert actor.bridge is not None and msg.dashboard_port is not None
    try:
        page = DashboardServer(msg.dashboard_port, fresh_token(msg.token_path), ActorPageSource(actor, journal))
        actor.bridge.call(page.start())
    except (OSError, TokenError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        why = f"cannot serve the live page on 127.0.0.1:{msg.dashboard_port}: {why}"
        if not msg.page_required:
            logger.critical("ALERT {}; the operator API goes on without it", why)
            return True
        actor.send(sender, ActorFailed("api", why, usage=True))
        return False
    actor.dashboard = page
    logger.info("live page on http://127.0.0.1:{}/ (`posguard dashboard` prints its URL)", msg.dashboard_port)
    return True
