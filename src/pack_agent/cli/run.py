"""`pack-agent run --config FILE`: the daemon.

SIGTERM or SIGINT: finish the frame at hand, flush, publish ``offline``, exit 0
within ``[daemon] shutdown_timeout_s``. SIGHUP: reload what can be reloaded.
Under systemd (``Type=notify``) it reports readiness and feeds the watchdog.
"""

from __future__ import annotations

import argparse

HELP = "run the agent (the daemon)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, help="the TOML configuration file")
    parser.add_argument(
        "--log-level",
        default=None,
        choices=["debug", "info", "warning", "error"],
        help="default: [daemon] log_level, else info",
    )
    parser.add_argument("--log-format", default="text", choices=["text", "json"])


def run(args: argparse.Namespace) -> int:
    import logging
    import signal

    from pack_agent.config.isolated import IsolatedCheck

    check = IsolatedCheck(args.config)  # validates in a child while we import the rest
    from pack_agent.runtime.daemon import Daemon
    from pack_agent.runtime.logsetup import setup_logging
    from pack_agent.runtime.sdnotify import SystemdNotifier

    setup_logging(args.log_level or "info", args.log_format)
    config = check.result()
    secrets = [config.mqtt.password.get_secret_value()] if config.mqtt.password else []
    setup_logging(args.log_level or config.daemon.log_level or "info", args.log_format, secrets)
    peak = (
        f", child peak {check.peak_rss_kib / 1024:.1f} MiB (pages shared with the daemon included)"
        if check.peak_rss_kib
        else ""
    )
    logging.getLogger("pack_agent").info(
        "configuration checked in a child process in %.2f s%s", check.seconds, peak
    )
    systemd = SystemdNotifier()
    try:
        daemon = Daemon(config, config_path=args.config, systemd=systemd)
    except BaseException as exc:
        systemd.notify(f"STATUS=failed to start: {exc}", "ERRNO=1")
        raise
    daemon.log_level_fixed = bool(args.log_level)  # the command line wins over the file

    def _stop(signum: int, _frame: object) -> None:  # no logging here: not signal-safe
        daemon.stop_reason = signal.Signals(signum).name
        daemon.stop_event.set()

    def _reload(_signum: int, _frame: object) -> None:
        daemon.request_reload()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, _reload)
    daemon.run()
    return 0
