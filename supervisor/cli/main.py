"""`posguard` — run a supervised deployment, or talk to a running one.

User mistakes (bad config, bad arguments, nothing running) get one line on stderr and a
non-zero exit, never a traceback. Commands import only what they use: the operator commands
(supervisor/cli/commands.py) need nothing but the standard library and answer in a blink.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any, NoReturn

from supervisor.cli.commands import add_commands, command_parser, default_config
from supervisor.cli.exits import EXIT_OK, EXIT_USAGE, UserError
from supervisor.cli.fleet import add_fleet
from supervisor.cli.viewing import add_viewing


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line -- `posguard: <what> (see posguard <command> --help)` --
    and exit 2. Subparsers are of this class too (add_subparsers uses the parent's class)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        # A value like -5%, -inf or -1e3 is a (bad) value for its option or argument, to be
        # refused by its own check with its own reason -- not taken for an unknown option.
        self._negative_number_matcher = _NEGATIVE

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"posguard: {message} (see {self.prog} --help)\n")


_NEGATIVE = re.compile(r"^-(\d|\.\d|inf|nan)", re.IGNORECASE)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="posguard", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    config = default_config()

    run = sub.add_parser("run", help="start (or adopt) the deployment, open the configured positions, watch it")
    run.add_argument("--config", default=config, help=f"TOML config (default {config})")
    run.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                     help="stop by itself after this many seconds (default: until Ctrl-C or `posguard stop`)")
    run.set_defaults(handler=_run)

    venue = sub.add_parser("venue", help="serve the config's simulated venue in this process (a private Unix socket)")
    venue.add_argument("--config", default=config, help=f"TOML config (default {config})")
    venue.add_argument("--socket", default=None, help="default: the config's venue.simulated.server")
    venue.set_defaults(handler=_venue)

    emulator = sub.add_parser("emulator", help="serve the config's [emulator] market as a Bybit-v5-compatible"
                                               " HTTP API at venue.api_url (127.0.0.1; a test instrument)")
    emulator.add_argument("--config", default=config, help=f"TOML config (default {config})")
    emulator.set_defaults(handler=_emulator)

    add_commands(sub, config)
    add_fleet(sub, config)
    add_viewing(command_parser(sub, config))
    args, unknown = parser.parse_known_args(argv)
    if unknown:                                          # said by the command's parser, naming its help
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args.handler(args))
    except UserError as exc:
        print(f"posguard: {exc}", file=sys.stderr)
        return exc.code
    except _config_error() as exc:
        for problem in exc.problems:                     # one line per problem
            print(f"posguard: config error: {problem}", file=sys.stderr)
        return EXIT_USAGE


def _config_error() -> type[Exception]:
    """ConfigError, without importing the config module for commands that never load one."""
    module = sys.modules.get("supervisor.config.loader")
    return module.ConfigError if module is not None else _Never


class _Never(Exception):
    pass


def _run(args: argparse.Namespace) -> int:
    from supervisor.cli.run import cmd_run

    return cmd_run(args)


def _venue(args: argparse.Namespace) -> int:
    from actors.logs import configure_logging
    from adapters.sim.server import SimVenueServer
    from supervisor.config.loader import load_config

    cfg = load_config(args.config)
    if cfg.simulated is None:
        raise UserError("venue.name is not \"simulated\": there is no simulated venue to serve", EXIT_USAGE)
    path = args.socket or cfg.sim_server or cfg.paths.venue_socket
    configure_logging(cfg.log)
    return _serve(SimVenueServer(cfg.simulated, path), "posguard venue: listening on {}")


def _emulator(args: argparse.Namespace) -> int:
    """The Bybit emulator in the foreground, accepting the keys the config's env vars hold."""
    from actors.logs import configure_logging
    from adapters.ccxt.settings import MissingKey
    from adapters.emulators.base import EmulatorConfig
    from adapters.emulators.bybit import BybitEmulator
    from supervisor.config.loader import emulator_port, load_config

    cfg = load_config(args.config)
    if cfg.emulator is None or cfg.ccxt is None:
        raise UserError("the config has no [emulator] section: nothing to serve", EXIT_USAGE)
    try:
        key, secret = cfg.ccxt.credentials()
    except MissingKey as exc:
        raise UserError(str(exc), EXIT_USAGE) from None
    configure_logging(cfg.log)
    served = EmulatorConfig(venue=cfg.emulator, keys=((key, secret),), account=cfg.emulator_account)
    emulator = BybitEmulator(served, emulator_port(cfg))
    return _serve(emulator, "posguard emulator: Bybit v5 API listening on http://127.0.0.1:{}")


def _serve(server: object, banner: str) -> int:
    """Run a local server (`start()` -> where it listens, `close()`) until SIGINT or SIGTERM."""
    import asyncio
    import signal

    async def serve() -> None:
        try:
            where = await server.start()  # type: ignore[attr-defined]
        except OSError as exc:
            raise UserError(f"cannot listen: {exc.strerror or exc}") from None
        print(banner.format(where), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.close()  # type: ignore[attr-defined]

    asyncio.run(serve())
    return EXIT_OK

