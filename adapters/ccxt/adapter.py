"""What every ccxt-backed adapter shares: building the client, precision and minimums, and
turning ccxt's exceptions back into the venue's own error codes.

ccxt matches message text before codes and, at a non-default base URL, may not know a venue's
futures codes at all (Binance), so its exception class is only a fallback: the code comes from
the venue's JSON body inside the message. ccxt is imported only when an adapter starts, in the
ExchangeActor's process.
"""

from __future__ import annotations

import contextlib
import json
import math
from abc import abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from loguru import logger

from adapters.base import (
    MALFORMED,
    Capabilities,
    ClosureReport,
    OrderReport,
    OrderStatus,
    PositionReport,
    Side,
    StopOrderReport,
    VenueAdapter,
    VenueError,
    VenueTimeout,
    closure_kind,
)
from adapters.ccxt.settings import MIN_SECRET_LEN, CcxtVenueSettings, unified_symbol

T = TypeVar("T")

# Local denials (never sent): classified REJECTED by every dialect's table.
PREFLIGHT_SYMBOLS = 50               # per-symbol preflight queries at most (the rest trust the first ones)
MIN_QTY, MIN_NOTIONAL, UNKNOWN_SYMBOL = "min_qty", "min_notional", "unknown_symbol"

_STATUS = {"open": OrderStatus.NEW, "closed": OrderStatus.FILLED, "canceled": OrderStatus.CANCELLED,
           "cancelled": OrderStatus.CANCELLED, "rejected": OrderStatus.REJECTED, "expired": OrderStatus.CANCELLED}


def json_in(text: str) -> dict[str, Any] | None:
    """The venue's JSON body inside a ccxt message (`"bybit {...}"`), if there is one."""
    start = text.find("{")
    while start >= 0:
        try:
            body = json.loads(text[start:])
            return body if isinstance(body, dict) else None
        except json.JSONDecodeError:
            end = text.rfind("}")
            try:
                body = json.loads(text[start:end + 1])
                return body if isinstance(body, dict) else None
            except json.JSONDecodeError:
                start = text.find("{", start + 1)
    return None


def _number(value: Any, default: float | None, name: str, symbol: str) -> float | None:
    """A numeric field: missing -> `default`; present but not a finite number -> malformed."""
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise VenueError(MALFORMED, f"{symbol}: {name} is not a number ({str(value)[:40]!r})")
    return number


def _fields(row: dict[str, Any]) -> str:
    return "fields: " + ", ".join(sorted(k for k in row if k != "info"))[:200]


def rebase(url: Any, base: str) -> Any:
    """The same REST path on another host: `https://fapi.binance.com/fapi/v1` -> `{base}/fapi/v1`."""
    if not isinstance(url, str):
        return url
    path = urlsplit(url).path
    return base.rstrip("/") + (path if path != "/" else "")


class CcxtAdapter(VenueAdapter):
    """Base of the ccxt adapters. Subclasses say how to build the client and what the venue's
    codes are called; all venue I/O goes through `_call`, which never lets a ccxt type out."""

    code_key = "retCode"
    message_key = "retMsg"
    not_found_code: int = 110001
    rate_limit_code: int = 10006
    clock_code: int = 10002                # timestamp outside the recv window
    dialect = "bybit"
    stream_class: Any = None               # its VenueStream class (beside the venue's adapter), None: none

    take_profit = False              # which exits beside the stop this venue holds (the subclasses say)
    trail_bounds_pct: tuple[float, float] | None = None
    trail_sized = False

    def __init__(self, settings: CcxtVenueSettings) -> None:
        self.settings = settings
        self.capabilities = Capabilities(
            venue=settings.name, attached_stop=self._attached_stop(), orders_per_second=settings.orders_per_second,
            reads_per_second=settings.reads_per_second, dialect=self.dialect, stop_orders=True,
            streams=settings.streams, take_profit=self.take_profit, trail_bounds_pct=self.trail_bounds_pct,
            trail_sized=self.trail_sized)
        self.ex: Any = None
        self._secrets: tuple[str, ...] = ()
        self._keys: tuple[str, str] | None = None
        self._last_price: dict[str, float] = {}

    def _attached_stop(self) -> bool:
        return self.settings.attached_stop

    @abstractmethod
    def make_client(self, ccxt_async: Any, key: str, secret: str) -> Any:
        """A configured ccxt async client (urls, options), markets not loaded yet."""

    def stream(self) -> Any:
        """A new private stream of this account, sharing our markets; it parses rows with a
        REST adapter of its own (never started), so a stream and a REST read say the same thing."""
        if not self.settings.streams or self.stream_class is None:
            return None
        return self.stream_class(self.settings, type(self)(self.settings),
                                 markets=self.ex.markets if self.ex is not None else None)

    def new_client(self, module: Any) -> Any:
        """A ccxt client of `module` (async_support, pro) with this account's keys, read afresh
        (a stream that reconnects after a refusal authenticates with what is there now)."""
        self.load_credentials()
        assert self._keys is not None
        key, secret = self._keys
        return self.make_client(module, key, secret)

    def load_credentials(self) -> tuple[str, ...]:
        self._keys = self.settings.credentials()
        self._secrets = tuple(s for s in self._keys if len(s) >= MIN_SECRET_LEN)
        return self._secrets

    async def start(self) -> None:
        if self._keys is None:
            self.load_credentials()
        assert self._keys is not None
        key, secret = self._keys
        import ccxt.async_support as ccxt_async  # here, not at import: only this process needs it

        self.ex = self.make_client(ccxt_async, key, secret)
        if self.settings.api_url:
            self.ex.urls["api"] = {k: rebase(url, self.settings.api_url) for k, url in self.ex.urls["api"].items()}
        await self._call(self.ex.load_markets)

    async def close(self) -> None:
        if self.ex is not None:
            await self.ex.close()

    def _trading(self, symbols: tuple[str, ...]) -> tuple[list[str], list[str]]:
        """The preflight's market part: every deployed symbol listed here, and trading now."""
        problems = []
        for symbol in symbols:
            market = self.ex.markets.get(unified_symbol(symbol)) if self.ex.markets else None
            if market is None:
                problems.append(f"{symbol} is not a linear USDT perpetual on {self.settings.name}: remove it from"
                                " deployment.symbols")
            elif market.get("active") is False:
                status = (market.get("info") or {}).get("status", "not trading")
                problems.append(f"{symbol} is not trading on {self.settings.name} now ({status}): remove it from"
                                " deployment.symbols until it trades again")
        return problems, []

    # -- shared helpers -----------------------------------------------------------------

    def _market(self, symbol: str) -> dict[str, Any]:
        market = self.ex.markets.get(unified_symbol(symbol)) if self.ex.markets else None
        if market is None:
            raise VenueError(UNKNOWN_SYMBOL, f"{symbol} is not a linear USDT perpetual on {self.settings.name}")
        return market

    def _amount(self, symbol: str, qty: float, reduce_only: bool, price_hint: float | None) -> float:
        """Quantity at the market's precision; entries below the minimums are denied here."""
        import ccxt

        market = self._market(symbol)
        step = market["precision"]["amount"]
        try:
            rounded = float(self.ex.amount_to_precision(market["symbol"], qty))   # truncates, never rounds up
        except ccxt.InvalidOrder:
            rounded = 0.0
        limits = market.get("limits") or {}
        min_qty = (limits.get("amount") or {}).get("min") or 0.0
        # A reduce-only close is never refused here below the minimum: the venue decides, and
        # a rollback must always be tried (it can never open or flip a position).
        if rounded <= 0 or (rounded < min_qty and not reduce_only):
            raise VenueError(MIN_QTY, f"{symbol}: qty {qty} is below the minimum {min_qty or step}"
                                      f" (step {step}); not sent")
        min_cost = (limits.get("cost") or {}).get("min") or 0.0
        price = self._last_price.get(symbol) or price_hint
        if not reduce_only and min_cost and price and rounded * price < min_cost:
            raise VenueError(MIN_NOTIONAL, f"{symbol}: order value {rounded * price:.2f} USDT is below the"
                                           f" minimum {min_cost} USDT; not sent")
        if abs(rounded - qty) > 1e-12:
            logger.info("{}: qty {} rounded to {} (step {})", symbol, qty, rounded, step)
        return rounded

    def _price(self, symbol: str, price: float) -> str:
        return self.ex.price_to_precision(unified_symbol(symbol), price)

    async def _call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        import ccxt

        try:
            return await fn(*args, **kwargs)
        except ccxt.BaseError as exc:
            error = self._translate(exc)
        except (ValueError, TypeError, ArithmeticError) as exc:
            # ccxt parsing a reply with garbage where a number belongs: a reply we cannot rely on
            # (for an order: an unknown outcome, asked by client id; for a read: refused).
            error = VenueError(MALFORMED, self.scrub(f"{getattr(fn, '__name__', 'call')}: reply not understood"
                                                      f" ({type(exc).__name__}: {str(exc)[:200]})"))
        if isinstance(error, VenueError) and error.code == self.clock_code and fn != self.ex.load_time_difference:
            # Refused for its timestamp: re-learn the venue's clock so the next request passes.
            # The refused request is not re-sent here; only its caller decides, by client id.
            with contextlib.suppress(ccxt.BaseError):    # the next call reports its own error
                await self.ex.load_time_difference()
        raise error

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def _translate(self, exc: Exception) -> Exception:
        """ccxt exception -> VenueError with the venue's code, or VenueTimeout."""
        import ccxt

        cause = exc.__cause__ or exc.__context__
        detail = f" ({type(cause).__name__}: {cause})" if cause is not None and str(cause) not in str(exc) else ""
        text = self.scrub(str(exc) + detail)
        body = json_in(text)
        if body is not None and str(body.get(self.code_key, "0")) not in ("0", "200"):
            code = body[self.code_key]
            return VenueError(int(code) if str(code).lstrip("-").isdigit() else str(code),
                              self.scrub(str(body.get(self.message_key, text))))
        if isinstance(exc, ccxt.RateLimitExceeded | ccxt.DDoSProtection):   # before NetworkError, its base
            return VenueError(self.rate_limit_code, text)    # refused, not processed
        if isinstance(exc, ccxt.RequestTimeout):
            return VenueTimeout(text)                     # sent, no answer: unknown outcome
        if isinstance(exc, ccxt.ExchangeNotAvailable):
            return VenueError(503, text)                  # a 5xx: the venue may have executed it
        if isinstance(exc, ccxt.NetworkError):
            return VenueTimeout(text)
        if isinstance(exc, ccxt.OrderNotFound):
            return VenueError(self.not_found_code, text)
        if isinstance(exc, ccxt.AuthenticationError | ccxt.PermissionDenied | ccxt.AccountSuspended):
            return VenueError("auth", text)
        return VenueError("ccxt", f"{type(exc).__name__}: {text}")

    # -- normalised reports -------------------------------------------------------------

    def parse_order(self, symbol: str, order: dict[str, Any], client_order_id: str) -> OrderReport:
        """An order as the venue tells it. A field we rely on missing is never defaulted: the
        reply is "malformed", an unknown outcome its caller resolves by client id."""
        status = _STATUS.get(str(order.get("status")))
        side = order.get("side")
        if status is None or side not in ("buy", "sell"):
            raise VenueError(MALFORMED, f"{symbol}: order reply without a {'status' if status is None else 'side'}"
                                        f" ({_fields(order)})")
        filled = _number(order.get("filled"), None, "filled", symbol)
        qty = _number(order.get("amount"), None, "amount", symbol)
        if filled is None or qty is None:                # "nothing filled" is never a guess
            raise VenueError(MALFORMED, f"{symbol}: order reply without a {'filled' if filled is None else 'amount'}"
                                        f" quantity ({_fields(order)})")
        if status is OrderStatus.NEW and filled > 0:
            status = OrderStatus.PARTIALLY_FILLED
        return OrderReport(
            symbol=symbol, client_order_id=order.get("clientOrderId") or client_order_id,
            venue_order_id=str(order.get("id") or ""), side=Side(side),
            qty=qty, status=status, filled_qty=filled,
            avg_price=_number(order.get("average"), None, "average", symbol) or None,
            reduce_only=bool(order.get("reduceOnly")),
            stop_price=_number(order.get("stopLossPrice"), None, "stopLossPrice", symbol) or None,
            take_profit=_number(order.get("takeProfitPrice"), None, "takeProfitPrice", symbol) or None)

    def parse_position(self, p: dict[str, Any]) -> PositionReport | None:
        """A position as the venue's view shows it (None: flat). Without a side it cannot be
        judged: the whole observation is refused ("malformed"), never guessed."""
        market_id = (p.get("info") or {}).get("symbol") or self.ex.market(p["symbol"])["id"]
        contracts = _number(p.get("contracts"), None, "contracts", market_id)
        if contracts is None:                            # no size is no "flat": never guessed
            raise VenueError(MALFORMED, f"{market_id}: position without a size ({_fields(p)})")
        qty = abs(contracts)
        if qty == 0:
            return None
        if p.get("side") not in ("long", "short"):
            raise VenueError(MALFORMED, f"{market_id}: position without a side ({_fields(p)})")
        return PositionReport(
            symbol=market_id, side=Side.BUY if p["side"] == "long" else Side.SELL, qty=qty,
            entry_price=_number(p.get("entryPrice"), None, "entryPrice", market_id) or None,
            stop_price=_number(p.get("stopLossPrice"), None, "stopLossPrice", market_id) or None,
            mark_price=_number(p.get("markPrice"), None, "markPrice", market_id) or None)

    def closed_by(self, order: dict[str, Any]) -> str:
        """Whether one order is the venue's own closing order: "stop" (a stop that triggered),
        "liquidation", "adl" (auto-deleveraging), or "" (an order a client placed)."""
        return ""

    def _closures(self, symbol: str, rows: list[dict[str, Any]]) -> list[ClosureReport]:
        """Closed orders (ccxt) -> the ones that reduced the position, newest first."""
        out = []
        for o in sorted(rows, key=lambda r: r.get("timestamp") or 0, reverse=True):
            closed_by = self.closed_by(o)
            if not (o.get("reduceOnly") or closed_by) or not float(o.get("filled") or 0):
                continue
            cid = str(o.get("clientOrderId") or "")
            out.append(ClosureReport(symbol, closure_kind(cid, closed_by), Side(o["side"]), float(o["filled"]),
                                     float(o["average"]) if o.get("average") else None, str(o.get("id") or ""), cid))
        return out

    def _is_stop(self, order: dict[str, Any]) -> bool:
        """A loss-side trigger order (never a take-profit). Each venue names them its own way."""
        return True

    def exit_kind(self, order: dict[str, Any]) -> str:
        """A trigger order that is not a stop loss: "take_profit" | "trailing" (ours, to list and
        cancel with the stops), or "" (not one the scan counts)."""
        return ""

    def parse_stop_orders(self, rows: list[dict[str, Any]]) -> list[StopOrderReport]:
        """ccxt trigger orders -> the stop orders the scan may count."""
        out = []
        for o in rows:
            info = o.get("info") or {}
            trigger = (o.get("triggerPrice") or o.get("stopPrice") or o.get("stopLossPrice")
                       or o.get("takeProfitPrice") or info.get("activatePrice") or info.get("triggerPrice"))
            kind = "stop" if self._is_stop(o) else self.exit_kind(o)
            if not trigger or not o.get("side") or not kind:
                continue
            close_all = str(info.get("closePosition", "")).lower() == "true"
            amount = float(o.get("amount") or 0.0)
            out.append(StopOrderReport(
                symbol=info.get("symbol") or self.ex.market(o["symbol"])["id"], side=Side(o["side"]),
                stop_price=float(trigger), qty=None if close_all or amount == 0 else amount,
                reduce_only=close_all or bool(o.get("reduceOnly")) or bool(info.get("closeOnTrigger")),
                client_order_id=str(o.get("clientOrderId") or ""), venue_order_id=str(o.get("id") or ""),
                kind=kind))
        return out

    async def cancel_stop_order(self, symbol: str, order: StopOrderReport) -> None:
        await self._call(self.ex.cancel_order, order.venue_order_id, unified_symbol(symbol), {"trigger": True})

    async def fetch_price(self, symbol: str) -> float:
        ticker = await self._call(self.ex.fetch_ticker, unified_symbol(symbol))
        price = float(ticker["last"])
        self._last_price[symbol] = price
        return price
