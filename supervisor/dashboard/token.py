"""The live page's token: random, kept in a 0600 file of the deployment's 0700 runtime directory
(made afresh each time the page binds its port: each run, and each replaced API), and compared
in constant time. Only the file's owner can read it: the page serves no one
else, though its port on 127.0.0.1 is reachable by every local user."""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import stat

TOKEN_BYTES = 32


class TokenError(Exception):
    """The token file cannot be made or read safely."""


def ensure_token(path: str) -> str:
    """The token in `path`, made (0600, O_EXCL: never through a link) when there is none."""
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(TOKEN_BYTES) + "\n")
    return read_token(path)


def fresh_token(path: str) -> str:
    """A new token in `path`, the old one gone: made each time the page binds its port, so one
    seen while the port was not ours (a replaced API's gap) is worth nothing after."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return ensure_token(path)


def read_token(path: str) -> str:
    """The token, from a regular file of ours that nobody else can read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise TokenError(f"no dashboard token at {path}: is the live page on ([dashboard] port) and the"
                         " deployment running?") from None
    except OSError as exc:
        raise TokenError(f"{path}: {exc.strerror}") from None
    with os.fdopen(fd) as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise TokenError(f"{path} is not a private file of this user (mode {stat.S_IMODE(st.st_mode):04o},"
                             f" uid {st.st_uid}): refusing it")
        try:
            token = fh.read().strip()
        except UnicodeDecodeError:
            token = ""                                   # not ours: said below
    if len(token) < TOKEN_BYTES:
        raise TokenError(f"{path} does not hold a token")
    return token


def token_ok(given: str | None, token: str) -> bool:
    """Constant time: how much of a guess matched never shows in how long the answer took."""
    return given is not None and hmac.compare_digest(given.encode(), token.encode())
