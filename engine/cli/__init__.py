"""The ``stepstream`` command line (:mod:`engine.cli.commands`) and what its commands
run: the engine and dev servers, the dev broker and session, topic provisioning and
broker resolution. ``main`` is the console script's entry point."""

from engine.cli.client import CliError
from engine.cli.commands import build_parser, main

__all__ = ["CliError", "build_parser", "main"]
