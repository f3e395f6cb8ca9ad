"""Pure pieces of the venue adapters: ccxt exceptions back to venue codes, symbol forms, and
which open conditional orders count as a position's stop."""

from __future__ import annotations

import ccxt
import pytest

from adapters.base import PositionReport, Side, StopOrderReport, VenueError, VenueTimeout
from adapters.binance.adapter import BinanceAdapter, stop_client_id
from adapters.bybit.adapter import BybitAdapter
from adapters.ccxt.settings import CcxtVenueSettings, unified_symbol, venue_symbol
from adapters.errors import Outcome, classify_error
from adapters.stops import with_stop_orders

SETTINGS = CcxtVenueSettings("bybit", key_env="K", secret_env="S")


@pytest.mark.parametrize(("exc", "expected", "outcome"), [
    # The venue's code inside the message wins over ccxt's class (ccxt matches text first).
    (ccxt.BadRequest('bybit {"retCode":10001,"retMsg":"can not set tp/sl/ts for zero position"}'), 10001,
     Outcome.NO_POSITION),
    (ccxt.ExchangeError('bybit {"retCode":34040,"retMsg":"not modified","result":{}}'), 34040, Outcome.NOT_MODIFIED),
    (ccxt.InvalidOrder('bybit {"retCode":110072,"retMsg":"OrderLinkedID is duplicate"}'), 110072,
     Outcome.ALREADY_PLACED),
    (ccxt.RequestTimeout("bybit POST http://127.0.0.1/v5/order/create 504 Gateway Time-out"), None, Outcome.UNKNOWN),
    (ccxt.ExchangeNotAvailable("bybit POST http://127.0.0.1/v5/order/create 503 <html>"), 503, Outcome.UNKNOWN),
    (ccxt.NetworkError("Cannot connect to host"), None, Outcome.UNKNOWN),
    (ccxt.OrderNotFound("Order  was not found."), 110001, Outcome.ORDER_NOT_FOUND),
    (ccxt.RateLimitExceeded("429 Too Many Requests"), 10006, Outcome.RETRY_LATER),
    (ccxt.AuthenticationError("requires \"apiKey\" credential"), "auth", Outcome.AUTH),
    (ccxt.ArgumentsRequired("fetchOrder() requires a symbol"), "ccxt", Outcome.UNKNOWN),
])
def test_bybit_translation(exc, expected, outcome):
    error = BybitAdapter(SETTINGS)._translate(exc)
    if expected is None:
        assert isinstance(error, VenueTimeout)
    else:
        assert isinstance(error, VenueError) and error.code == expected
    assert classify_error(error, "bybit") is outcome


@pytest.mark.parametrize(("exc", "expected", "outcome"), [
    # At an api_url override ccxt does not know Binance's futures codes: plain ExchangeError.
    (ccxt.ExchangeError('binanceusdm {"code":-2021,"msg":"Order would immediately trigger."}'), -2021,
     Outcome.REJECTED),
    (ccxt.ExchangeError('binanceusdm {"code":-4116,"msg":"ClientOrderId is duplicated."}'), -4116,
     Outcome.ALREADY_PLACED),
    (ccxt.ExchangeError('binanceusdm {"code":-1007,"msg":"Timeout waiting for response"}'), -1007, Outcome.UNKNOWN),
    (ccxt.OrderNotFound("binanceusdm Order does not exist."), -2013, Outcome.ORDER_NOT_FOUND),
])
def test_binance_translation(exc, expected, outcome):
    error = BinanceAdapter(CcxtVenueSettings("binanceusdm", key_env="K", secret_env="S"))._translate(exc)
    assert isinstance(error, VenueError) and error.code == expected
    assert classify_error(error, "binance") is outcome


def test_secrets_are_scrubbed_from_translated_errors():
    adapter = BybitAdapter(SETTINGS)
    adapter._secrets = ("the-key-123", "the-secret-456")
    error = adapter._translate(ccxt.AuthenticationError(
        'bybit {"retCode":10004,"retMsg":"error sign! origin_string[1700000000000the-key-1235000{}]"}'))
    assert "the-key-123" not in str(error) and "***" in str(error) and error.code == 10004


@pytest.mark.parametrize(("text", "venue_id"), [("BTCUSDT", "BTCUSDT"), ("btc/usdt:usdt", "BTCUSDT"),
                                                 (" 1000PEPE/USDT:USDT ", "1000PEPEUSDT")])
def test_symbol_forms(text, venue_id):
    assert venue_symbol(text) == venue_id
    assert venue_symbol(unified_symbol(venue_id)) == venue_id


@pytest.mark.parametrize("bad", ["BTC/USD:BTC", "BTC-PERP", "USDT", "", "BTC/USDT"])
def test_symbols_we_do_not_trade_are_refused(bad):
    with pytest.raises(ValueError):
        venue_symbol(bad)


LONG = PositionReport("BTCUSDT", Side.BUY, 1.0, 100.0, None)
SHORT = PositionReport("ETHUSDT", Side.SELL, 2.0, 10.0, None)


def stop(symbol: str, side: Side, price: float, qty: float | None = None, reduce_only: bool = True) -> StopOrderReport:
    return StopOrderReport(symbol, side, price, qty, reduce_only)


def test_close_position_stop_orders_count_as_the_positions_stop():
    merged = with_stop_orders([LONG, SHORT], [stop("BTCUSDT", Side.SELL, 95.0), stop("BTCUSDT", Side.SELL, 97.0),
                                              stop("ETHUSDT", Side.BUY, 11.0, qty=2.0)])
    assert [p.stop_price for p in merged] == [97.0, 11.0]      # the tightest protecting order


@pytest.mark.parametrize("order", [
    stop("BTCUSDT", Side.BUY, 95.0),                 # same side: would add to the position
    stop("BTCUSDT", Side.SELL, 95.0, qty=0.5),       # covers half of it
    stop("BTCUSDT", Side.SELL, 95.0, reduce_only=False),   # could open a short
    stop("ETHUSDT", Side.SELL, 95.0),                # another symbol
])
def test_orders_that_do_not_protect_the_whole_position_do_not_count(order):
    assert with_stop_orders([LONG], [order])[0].stop_price is None


def test_a_positions_own_stop_is_kept():
    own = PositionReport("BTCUSDT", Side.BUY, 1.0, 100.0, 90.0)
    assert with_stop_orders([own], [stop("BTCUSDT", Side.SELL, 97.0)])[0].stop_price == 90.0


def test_binance_stop_ids_are_stable_valid_and_distinct():
    a = stop_client_id("BTCUSDT", Side.BUY, "58000.1")
    assert a == stop_client_id("BTCUSDT", Side.BUY, "58000.1")        # a re-send is a duplicate, not a second stop
    assert a != stop_client_id("BTCUSDT", Side.BUY, "58000.2") != stop_client_id("BTCUSDT", Side.SELL, "58000.1")
    assert len(a) <= 36 and all(c.isalnum() or c in "-_." for c in a)


@pytest.mark.parametrize(("info", "side", "counts"), [
    ({"stopOrderType": "StopLoss"}, "sell", True),
    ({"stopOrderType": "TakeProfit"}, "sell", False),
    ({"stopOrderType": "PartialTakeProfit"}, "sell", False),
    ({"stopOrderType": "Stop", "triggerDirection": 2}, "sell", True),    # sell when the price falls
    ({"stopOrderType": "Stop", "triggerDirection": 1}, "sell", False),   # sell when it rises: a take-profit
    ({"stopOrderType": "Stop", "triggerDirection": 1}, "buy", True),
])
def test_bybit_counts_loss_side_trigger_orders_only(info, side, counts):
    adapter = BybitAdapter(SETTINGS)
    assert adapter._is_stop({"side": side, "info": info}) is counts


@pytest.mark.parametrize(("order_type", "counts"), [("STOP_MARKET", True), ("STOP", True),
                                                    ("TAKE_PROFIT_MARKET", False), ("TRAILING_STOP_MARKET", False)])
def test_binance_counts_stop_orders_only(order_type, counts):
    adapter = BinanceAdapter(CcxtVenueSettings("binanceusdm", key_env="K", secret_env="S"))
    assert adapter._is_stop({"side": "sell", "info": {"orderType": order_type}}) is counts
