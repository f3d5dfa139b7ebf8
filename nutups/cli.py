"""The nutups command line: parses options and calls the layers."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import click

from . import __version__
from .config import default_confpath, load_configuration
from .config.nutconf import parse_listen


class _JournalFormatter(logging.Formatter):
    """`<priority>message` lines, which journald files under the right level."""

    LEVELS = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prio = self.LEVELS.get(record.levelno, 6)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines())


def setup_logging(verbose: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def _listen_option(values: tuple[str, ...]) -> list[tuple[str, int]]:
    out = []
    for v in values:
        try:
            out.append(parse_listen(v))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--listen") from None
    return out


confpath_option = click.option(
    "--confpath", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Directory with ups.conf, upsd.conf, upsd.users, nutups.yaml "
         "(default: $NUT_CONFPATH, else /etc/nutups).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nutups")
def main() -> None:
    """A NUT-compatible UPS server for Geekworm X120X Raspberry Pi UPS HATs."""


@main.command()
@confpath_option
@click.option("--listen", "listen", multiple=True, metavar="HOST:PORT",
              help="Listen here instead of upsd.conf's LISTEN (repeatable).")
@click.option("--statepath", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Runtime state directory (default: $NUT_STATEPATH, upsd.conf STATEPATH).")
@click.option("-v", "--verbose", count=True, help="Debug logging.")
def serve(confpath: Path | None, listen: tuple[str, ...], statepath: Path | None, verbose: int) -> None:
    """Run the NUT server with the drivers of ups.conf."""
    from .daemon import Daemon

    setup_logging(verbose)
    log = logging.getLogger("nutups")
    confpath = confpath or default_confpath()
    if statepath is None and os.environ.get("NUT_STATEPATH"):
        statepath = Path(os.environ["NUT_STATEPATH"])
    cfg = load_configuration(confpath)
    for problem in cfg.problems:
        (log.warning if problem.warning else log.error)("%s", problem)
    if not confpath.is_dir():
        raise SystemExit(2)
    try:
        daemon = Daemon(cfg, listen=_listen_option(listen) or None, statepath=statepath)
    except (OSError, ValueError) as exc:
        log.error("cannot start: %s", exc)
        raise SystemExit(2) from None
    try:
        asyncio.run(daemon.run_forever())
    except OSError as exc:
        log.error("cannot start: %s", exc)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        pass


@main.group()
def config() -> None:
    """Work with the configuration files."""


@config.command("check")
@confpath_option
def config_check(confpath: Path | None) -> None:
    """Validate every configuration file; print file:line: problem for each; exit 1 on errors."""
    confpath = confpath or default_confpath()
    cfg = load_configuration(confpath)
    for problem in cfg.problems:
        click.echo(str(problem), err=True)
    if cfg.errors:
        click.echo(f"{len(cfg.errors)} error(s) in {confpath}", err=True)
        sys.exit(1)
    click.echo(f"{confpath}: OK ({len(cfg.ups)} UPS: {', '.join(s.name for s in cfg.ups) or 'none'})")


if __name__ == "__main__":  # pragma: no cover
    main()
