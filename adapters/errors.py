"""Venue errors classified by what should happen next — one table, no scattered ifs.

Classify on the venue's own code (Bybit retCode), refined by message text where one code
means several things (10001). ccxt matches text before codes, so its exception class alone
is not trusted; adapters hand us the code.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from adapters.base import MALFORMED, VenueError, VenueTimeout


class Outcome(StrEnum):
    """What a failed (or oddly successful) venue call means for the caller."""

    REJECTED = "rejected"            # definite no; nothing changed on the venue
    RETRY_LATER = "retry_later"      # not processed (rate limit, busy); same request may be sent again
    UNKNOWN = "unknown"              # may or may not have executed: resolve by client id, never resend
    NO_POSITION = "no_position"      # the matching engine holds no position for this symbol
    AUTH = "auth"                    # keys, signature, clock: needs a human
    BUG = "bug"                      # our request or our code is wrong: needs a human
    ORDER_NOT_FOUND = "order_not_found"  # not (yet) visible under that id
    ALREADY_PLACED = "already_placed"    # duplicate client id: the first send got through
    NOT_MODIFIED = "not_modified"        # the venue already holds exactly this: success


@dataclass(frozen=True, slots=True)
class ErrorRule:
    code: int | str
    outcome: Outcome
    text: str | None = None          # lower-case substring that must appear in the message


# First matching rule wins: rules with a text refinement precede the bare code.
BYBIT_RULES: tuple[ErrorRule, ...] = (
    ErrorRule(10001, Outcome.NO_POSITION, "zero position"),
    ErrorRule(10001, Outcome.REJECTED),
    ErrorRule(10000, Outcome.UNKNOWN),           # server error
    ErrorRule(10002, Outcome.AUTH),              # timestamp outside recv window
    ErrorRule(10003, Outcome.AUTH),              # invalid api key
    ErrorRule(10004, Outcome.AUTH),              # bad signature
    ErrorRule(10005, Outcome.AUTH),              # permission denied
    ErrorRule(10006, Outcome.RETRY_LATER),       # rate limit
    ErrorRule(10016, Outcome.UNKNOWN),           # server error / request timeout
    ErrorRule(10018, Outcome.RETRY_LATER),       # ip rate limit
    ErrorRule(110001, Outcome.ORDER_NOT_FOUND),
    ErrorRule(110007, Outcome.REJECTED),         # insufficient balance
    ErrorRule(110017, Outcome.NO_POSITION),      # reduce-only with nothing to reduce
    ErrorRule(110094, Outcome.REJECTED),         # below the minimum order value
    ErrorRule(110043, Outcome.NOT_MODIFIED),     # leverage not modified
    ErrorRule(110072, Outcome.ALREADY_PLACED),   # duplicate orderLinkId
    ErrorRule(34040, Outcome.NOT_MODIFIED),      # tp/sl not modified
    ErrorRule(400, Outcome.BUG),                 # malformed request
    ErrorRule(503, Outcome.UNKNOWN),             # HTTP 5xx: may have executed
    ErrorRule(502, Outcome.UNKNOWN),
    ErrorRule(504, Outcome.UNKNOWN),
)

# Raised by the adapters themselves (adapters.ccxt.adapter), the same for every venue.
LOCAL_RULES: tuple[ErrorRule, ...] = (
    ErrorRule("min_qty", Outcome.REJECTED),      # below the market's minimum or step: never sent
    ErrorRule("min_notional", Outcome.REJECTED),
    ErrorRule("unknown_symbol", Outcome.REJECTED),
    ErrorRule("fenced", Outcome.REJECTED),       # past the writer's lease deadline: never sent (actors/exchange)
    ErrorRule("auth", Outcome.AUTH),             # ccxt refused the credentials without a venue code
    # A reply missing a field we rely on: for an order we sent, its outcome is unknown (asked by
    # client id, never assumed); for a read, the observation is refused.
    ErrorRule(MALFORMED, Outcome.UNKNOWN),
)

# Binance USDⓈ-M (fapi). Codes are negative; HTTP 503 "Unknown error, please check your request
# or try again later" means the request may have reached the matching engine.
BINANCE_RULES: tuple[ErrorRule, ...] = (
    ErrorRule(-1007, Outcome.UNKNOWN),           # timeout waiting for the backend: status unknown
    ErrorRule(-1008, Outcome.RETRY_LATER),       # server overloaded, request rejected
    ErrorRule(-1003, Outcome.RETRY_LATER),       # too many requests
    ErrorRule(-1015, Outcome.RETRY_LATER),       # too many new orders
    ErrorRule(-1021, Outcome.AUTH),              # timestamp outside recvWindow
    ErrorRule(-1022, Outcome.AUTH),              # signature invalid
    ErrorRule(-2014, Outcome.AUTH),              # api-key format invalid
    ErrorRule(-2015, Outcome.AUTH),              # invalid key, IP or permissions
    ErrorRule(-2011, Outcome.ORDER_NOT_FOUND),   # unknown order (cancel)
    ErrorRule(-2013, Outcome.ORDER_NOT_FOUND),   # order does not exist
    # A stop that would trigger immediately cannot protect anything: the price is already
    # through it. Refused -> the PositionActor's "stop refused" edge flattens now.
    ErrorRule(-2021, Outcome.REJECTED),
    ErrorRule(-2022, Outcome.NO_POSITION),       # reduce-only rejected: nothing (left) to reduce
    ErrorRule(-4116, Outcome.ALREADY_PLACED),    # duplicate clientOrderId
    ErrorRule(-4131, Outcome.REJECTED),          # PERCENT_PRICE band: a close retries with back-off
    ErrorRule(-4164, Outcome.REJECTED),          # below min notional
    ErrorRule(-2019, Outcome.REJECTED),          # margin insufficient
    ErrorRule(-4061, Outcome.REJECTED),          # position side does not match the account's mode (hedge)
    ErrorRule(-1102, Outcome.BUG),               # mandatory parameter missing or malformed
    ErrorRule(-1111, Outcome.BUG),               # precision over the maximum defined
    ErrorRule(503, Outcome.UNKNOWN),             # HTTP 5xx: may have executed
    ErrorRule(502, Outcome.UNKNOWN),
    ErrorRule(504, Outcome.UNKNOWN),
)

RULES_BY_DIALECT: dict[str, tuple[ErrorRule, ...]] = {
    "bybit": BYBIT_RULES + LOCAL_RULES,
    "binance": BINANCE_RULES + LOCAL_RULES,
}

# An unlisted code might have executed; treating it as UNKNOWN makes the caller query by id.
UNLISTED = Outcome.UNKNOWN


def classify_error(error: BaseException, dialect: str = "bybit") -> Outcome:
    """Map an adapter exception to an Outcome. Non-venue exceptions are our bugs."""
    if isinstance(error, VenueTimeout | TimeoutError):
        return Outcome.UNKNOWN
    if not isinstance(error, VenueError):
        return Outcome.BUG
    text = error.message.lower()
    for rule in RULES_BY_DIALECT[dialect]:
        if rule.code == error.code and (rule.text is None or rule.text in text):
            return rule.outcome
    return UNLISTED
