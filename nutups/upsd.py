"""`nutups upsd`: a drop-in for NUT's upsd, with its command line, that serves only NUT drivers' sockets.

It behaves as upsd 2.8.0 (server/upsd.c main()): configuration from NUT_CONFPATH
(default /etc/nut), sockets and pid file in NUT_STATEPATH or upsd.conf's STATEPATH
(default /run/nut); it refuses to start without ups.conf, or with no UPS in it
unless upsd.conf says ALLOW_NO_DEVICE; every UPS is read from its driver's socket
(no built-in driver, no simulator), so it can stand in for /usr/sbin/upsd.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from . import __version__
from .config.nutconf import DEFAULT_PORT
from .configuration import load_configuration
from .daemon import Daemon
from .paths import NUT_CONFPATH, resolve_confpath, resolve_nut_statepath
from .process import (
    ProcessError,
    become,
    daemonize,
    remove_pid_file,
    setup_logging,
    signal_running,
    target_user,
    write_pid_file,
)

log = logging.getLogger("nutups.upsd")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="upsd", add_help=False, description="Network server for UPS data (nutups).")
    p.add_argument("-c", dest="command", choices=("reload", "stop"),
                   help="send <command> via signal to the background process (reload, stop)")
    p.add_argument("-P", dest="pid", type=int, help="send the signal above to PID (bypassing the PID file)")
    p.add_argument("-D", dest="debug", action="count", default=0, help="raise debugging level (stay foreground)")
    p.add_argument("-F", dest="foreground", action="count", default=0,
                   help="stay foregrounded (-FF: and still save the PID file)")
    p.add_argument("-B", dest="background", action="store_true", help="stay backgrounded even with -D")
    p.add_argument("-h", "--help", dest="help", action="store_true", help="display this help")
    p.add_argument("-r", dest="chroot", metavar="DIR", help="accepted; nutups does not chroot")
    p.add_argument("-q", dest="quiet", action="count", default=0, help="raise log level threshold")
    p.add_argument("-u", dest="user", metavar="USER", help="switch to USER (if started as root)")
    p.add_argument("-V", dest="version", action="store_true", help="display the version of this software")
    p.add_argument("-4", dest="ipv4", action="store_true", help="IPv4 only")
    p.add_argument("-6", dest="ipv6", action="store_true", help="IPv6 only")
    return p


def _fatal(message: str) -> int:
    print(f"upsd: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args_parser = build_parser()
    try:
        args = args_parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.help:
        args_parser.print_help()
        return 0
    if args.version:
        print(f"Network UPS Tools upsd (nutups {__version__})")
        return 0
    setup_logging(0 if args.quiet else args.debug, args.quiet)
    confpath = resolve_confpath(NUT_CONFPATH)
    cfg = load_configuration(confpath, require_ups_conf=False)
    statepath = resolve_nut_statepath(cfg.upsd.statepath)
    pidfile = statepath / "upsd.pid"
    if args.command:
        try:
            signal_running(pidfile, args.pid, args.command, "upsd")
        except ProcessError as exc:
            return _fatal(str(exc))
        return 0
    if not confpath.is_dir():
        return _fatal(f"configuration directory {confpath} not found (set NUT_CONFPATH)")
    if not (confpath / "ups.conf").is_file():
        return _fatal(f"can't open {confpath / 'ups.conf'}: no UPS definitions")
    for problem in cfg.problems:
        if "unknown driver" not in problem.message:  # upsd reads any driver's socket
            (log.warning if problem.warning else log.error)("%s", problem)
    if not cfg.ups and not cfg.upsd.allow_no_device:
        return _fatal(f"fatal error: at least one UPS must be defined in {confpath / 'ups.conf'} "
                      "(or ALLOW_NO_DEVICE true in upsd.conf)")
    listen = list(dict.fromkeys(cfg.upsd.listen_addresses()))  # NIT's upsd.conf lists one twice
    if args.ipv4 or args.ipv6:
        listen = [(h, p) for h, p in listen if (":" in h) == args.ipv6] or \
                 [("127.0.0.1" if args.ipv4 else "::1", DEFAULT_PORT)]
    try:
        user = target_user(args.user)
    except ProcessError as exc:
        return _fatal(str(exc))
    try:
        daemon = Daemon(cfg, listen=listen, statepath=statepath, builtin_drivers=False)
    except (OSError, ValueError) as exc:
        return _fatal(f"cannot start: {exc}")
    foreground = (args.foreground or args.debug) and not args.background
    if not foreground:
        daemonize()
    write_pid = not foreground or args.foreground >= 2

    def bound() -> None:
        """The ports are bound: write the pid file and drop root, as upsd does."""
        if write_pid:
            try:
                write_pid_file(pidfile)
            except OSError as exc:
                log.warning("cannot write %s: %s", pidfile, exc.strerror)
        become(user)

    try:
        asyncio.run(daemon.run_forever(after_start=bound))
    except OSError as exc:
        return _fatal(f"cannot start: {exc.strerror or exc}")
    except KeyboardInterrupt:
        pass
    finally:
        if write_pid:
            remove_pid_file(pidfile)
    return 0
