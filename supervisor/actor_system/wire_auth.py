"""Authenticated frames on thespian's TCP transport: nothing is unpickled before its HMAC checks.

thespian's TCP base unpickles every frame that reaches any of its sockets (the admin, every
actor, acknowledgements) through one module attribute, `TCPTransport.serializer`, before any
envelope or sender check. `install(key)` replaces it with a serializer that prefixes every
pickle with HMAC-SHA256(key, pickle) and refuses, without unpickling, any frame whose tag does
not verify; the precomputed acknowledgement frames are rebuilt with the same serializer, so
acks are authenticated too.

The key is random per deployment (`new_key()`), lives only in the memory of the process that
starts the actor system, and reaches the actor processes by fork: it never touches a file and
never crosses a socket. A process without it (another uid, or any process of ours that did not
fork from the deployment) cannot make a frame any actor will deserialise.

A refused frame becomes `REFUSED`, which thespian's receive path treats as a corrupted packet:
it answers "data error", closes that connection and carries on -- random bytes or a forged
pickle never take a listener down.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
from typing import Any

TAG = hashlib.sha256().digest_size


class _Refused:
    """What an unauthenticated frame deserialises to: nothing thespian can act on."""

    def __repr__(self) -> str:
        return "<posguard: unauthenticated frame refused>"


REFUSED = _Refused()


class AuthenticatedSerializer:
    """The `dumps`/`loads` pair thespian's TCP transport calls for every frame."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the transport key must be at least 32 random bytes")
        self._key = key

    def dumps(self, obj: Any) -> bytes:
        payload = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
        return hmac.new(self._key, payload, hashlib.sha256).digest() + payload

    def loads(self, frame: bytes) -> Any:
        tag, payload = frame[:TAG], frame[TAG:]
        if len(tag) != TAG or not hmac.compare_digest(tag, hmac.new(self._key, payload, hashlib.sha256).digest()):
            return REFUSED                         # never unpickled
        return pickle.loads(payload)


def new_key() -> bytes:
    return os.urandom(32)


def install(key: bytes) -> None:
    """Authenticate every frame of this process's thespian TCP transport (and of every process
    forked from it afterwards). Call before the actor system starts."""
    from thespian.system.transport import TCPTransport
    from thespian.system.transport.streamBuffer import ackDataErrPacket, ackPacket, toSendBuffer

    serializer = AuthenticatedSerializer(key)
    TCPTransport.serializer = serializer
    TCPTransport.ackMsg = toSendBuffer(ackPacket, serializer.dumps)
    TCPTransport.ackDataErrMsg = toSendBuffer(ackDataErrPacket, serializer.dumps)
