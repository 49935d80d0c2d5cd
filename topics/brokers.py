"""Where the brokers are: the one resolution both the engine and the SDK use.

Pure: the caller passes ``read_text``, its way of reading a file (stripped text, or
None when it cannot be read), so this module does no I/O itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import PurePath

from topics.settings import DEV_BROKER_ADDRESS, DEV_BROKER_FILE, dev_file_candidates

ReadText = Callable[[PurePath], "str | None"]
# The variables that set the brokers, first set wins.
BROKER_VARIABLES = ("STEPSTREAM_BROKERS", "KAFKA_BOOTSTRAP_SERVERS")


def configured_brokers(env: Mapping[str, str]) -> tuple[str, str] | None:
    """Brokers set explicitly in ``env``, and the variable that set them."""
    for name in BROKER_VARIABLES:
        if env.get(name):
            return env[name], name
    return None


def find_dev_file(name: str, cwd: PurePath, env: Mapping[str, str], read_text: ReadText
                  ) -> tuple[str, str] | None:
    """The first non-empty file ``name`` that ``stepstream dev`` wrote (see
    :func:`topics.settings.dev_file_candidates`): its text and path."""
    for candidate in dev_file_candidates(name, cwd, env):
        text = read_text(candidate)
        if text:
            return text, str(candidate)
    return None


def resolve_brokers(env: Mapping[str, str], cwd: PurePath, read_text: ReadText, *,
                    given: str | None = None, given_source: str = "given"
                    ) -> tuple[str, str]:
    """The bootstrap servers and where they came from (for error messages): ``given``,
    ``STEPSTREAM_BROKERS``, ``KAFKA_BOOTSTRAP_SERVERS``, the address ``stepstream dev``
    wrote to :data:`~topics.settings.DEV_BROKER_FILE` (in ``cwd``, a parent, or
    ``$HOME``), else :data:`~topics.settings.DEV_BROKER_ADDRESS`."""
    if given:
        return given, given_source
    found = configured_brokers(env) or find_dev_file(DEV_BROKER_FILE, cwd, env, read_text)
    if found:
        return found
    return DEV_BROKER_ADDRESS, (f"the default: no {DEV_BROKER_FILE} here, in a parent "
                                f"folder or in $HOME")
