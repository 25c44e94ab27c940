"""``python -m miniq``: parse the arguments, load the ``-A`` app, call the
library. Nothing else lives here, so every command is a function to test.
"""
import argparse
import logging
import os
import sys
from typing import List, Optional

from .app import load_app
from .exceptions import ImproperlyConfigured

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-A", "--app", default=argparse.SUPPRESS,
                        help="the app: module, module:attribute or module.attribute")
    parser = argparse.ArgumentParser(prog="miniq", parents=[common],
                                     description="A task queue for one machine, on one SQLite file.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    worker = commands.add_parser("worker", parents=[common], help="start a worker")
    worker.add_argument("-c", "--concurrency", type=int, help="child processes (default: CPUs)")
    worker.add_argument("-Q", "--queues", help="comma-separated queues to serve")
    worker.add_argument("-l", "--loglevel", type=str.upper, choices=LEVELS, default="WARNING")
    worker.add_argument("--start-method", choices=("fork", "forkserver", "spawn"))
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "app", None):
        parser.error("the -A/--app option is required (e.g. -A proj)")
    if os.getcwd() not in sys.path:  # as Celery: the app module is found from here
        sys.path.insert(0, os.getcwd())
    try:
        app = load_app(args.app)
        if args.command == "worker":
            from .worker import LOG_FORMAT, Worker
            logging.basicConfig(level=args.loglevel, format=LOG_FORMAT)
            queues = args.queues.split(",") if args.queues else None
            return Worker(app, args.app, args.concurrency, queues, args.start_method,
                          args.loglevel).run()
    except ImproperlyConfigured as exc:
        print(f"miniq: error: {exc}", file=sys.stderr)
        return 2
    return 0
