"""The operator's view of a running deployment, from the command line: `posguard wait` (exit 0
once it takes entries) and `posguard dashboard` (the live page's URL, its token in it)."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from supervisor.cli.commands import _ask, _toml, connect, emit, parse_wait
from supervisor.cli.exits import EXIT_FAIL, EXIT_OK, EXIT_USAGE, UserError
from supervisor.client import ClientError, NotReady, socket_path_of
from supervisor.host.runtime import DASHBOARD_TOKEN_NAME


def cmd_wait(args: argparse.Namespace) -> int:
    """Exit 0 once the deployment takes entries; 1 with its phase and reason when it does not
    within --timeout (nothing serving yet counts as starting), or is in safe mode or stopping."""
    timeout = parse_wait(args.timeout, "--timeout")
    deadline = time.monotonic() + timeout
    with connect(args.config, wait_s=timeout) as pg:
        try:
            result = pg.wait_ready(max(0.0, deadline - time.monotonic()))
        except NotReady as exc:
            if args.json:
                emit(args, {"ok": False, **exc.extra, "reason": exc.message}, "")
                return EXIT_FAIL
            raise UserError(f"not ready: {exc.message}") from None
        except ClientError as exc:
            raise UserError(exc.message) from None
    done, of = result["recovery"]["done"], result["recovery"]["of"]
    emit(args, {"ok": True, **result}, f"posguard: ready ({done} of {of} symbols recovered)")
    return EXIT_OK


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Print (and with --open, open) the live page's URL, its token in it. The port is the one
    the running deployment's API says it serves -- asked over its owner-checked socket, so a
    process of another user squatting the port while posguard is down never gets the token --
    and the token is read from the deployment's 0600 file. Nothing is started."""
    from supervisor.dashboard.token import TokenError, read_token

    section = _toml(args.config).get("dashboard")
    if section is not None and not isinstance(section, dict):
        raise UserError(f"config error: {args.config}: dashboard: must be a table ([dashboard] port = ...)", EXIT_USAGE)
    port = section.get("port") if section else None
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise UserError(f"the live page is off in {args.config}: set [dashboard] port (e.g. 19700) and restart"
                        " `posguard run`", EXIT_USAGE)
    with connect(args.config) as pg:
        served = _ask(pg, "status", columns=True, fields=["symbol"]).get("dashboard")
    if not served:
        raise UserError(f"the running deployment serves no live page (127.0.0.1:{port} was taken when its API"
                        " started, or the config changed since: see its log; restart `posguard run`)")
    try:
        path = os.path.join(os.path.dirname(socket_path_of(args.config)), DASHBOARD_TOKEN_NAME)
        token = read_token(path)
    except ValueError as exc:
        raise UserError(f"config error: {exc}", EXIT_USAGE) from None
    except TokenError as exc:
        raise UserError(str(exc)) from None
    url = f"http://127.0.0.1:{served['port']}/?token={token}"
    if args.open:
        import webbrowser

        opened = webbrowser.open(url)
        emit(args, {"url": url, "opened": opened}, url if opened else f"{url}\n(no browser to open here: copy the URL)")
    else:
        emit(args, {"url": url}, url)
    return EXIT_OK


def add_viewing(parser: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = parser("dashboard", "print the live page's URL (read-only; its token is in it: keep it to yourself)")
    p.add_argument("--open", action="store_true", help="open it in a browser too")
    p.set_defaults(handler=cmd_dashboard)
    p = parser("wait", "wait until the deployment takes entries (exit 0), or say why not (exit 1)")
    p.add_argument("--timeout", default="30", metavar="S", help="give up after this long (default 30)")
    p.set_defaults(handler=cmd_wait)
