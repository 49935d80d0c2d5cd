"""What ``stepstream dev`` owns on disk while it runs: a lock per folder, so that a second
one exits before it touches anything, and the files that tell clients anywhere on the
machine where its broker and API are (see ``topics.settings.dev_file_candidates``)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from topics.settings import DEV_API_FILE, DEV_BROKER_FILE, DEV_DIR

LOCK_NAME = "dev.lock"


class DevBusyError(Exception):
    """Another ``stepstream dev`` holds the lock, or a port is taken: one line."""


class DevLock:
    """Exclusive ``flock`` locks on ``paths``, held until :meth:`release` (or the process
    ends: the kernel drops a dead process's locks, so a crash leaves nothing stale).
    The files hold the holder's pid and API address, for the next one's message."""

    def __init__(self, paths: list[Path]) -> None:
        unique: dict[Path, None] = {}
        for p in paths:
            unique.setdefault(p.absolute(), None)
        self.paths = list(unique)
        self._files: list[IO[str]] = []

    def acquire(self, api: str) -> DevLock:
        """Take every lock or none; raises :class:`DevBusyError` naming the holder."""
        try:
            for path in self.paths:
                path.parent.mkdir(parents=True, exist_ok=True)
                # Opened without truncating: the holder's details stay readable until
                # we hold the lock ourselves.
                f = open(path, "a+")  # noqa: SIM115 (held open as long as the lock)
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    f.close()
                    if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                        raise
                    raise DevBusyError(_held_message(path)) from None
                self._files.append(f)
        except BaseException:
            self.release()
            raise
        self.update(api)
        return self

    def update(self, api: str) -> None:
        """Record our pid and API address (once the API is bound, its real port)."""
        text = json.dumps({"pid": os.getpid(), "api": api}) + "\n"
        for f in self._files:
            f.seek(0)
            f.truncate()
            f.write(text)
            f.flush()

    def release(self) -> None:
        """Drop the locks; the files stay (removing a lock file races a new holder)."""
        files, self._files = self._files, []
        for f in files:
            with contextlib.suppress(OSError):
                f.close()


def _held_message(path: Path) -> str:
    holder: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads(path.read_text() or "{}")
        if isinstance(loaded, dict):
            holder = loaded
    where = "this folder" if path.parent.parent == Path.cwd().absolute() else str(path.parent)
    return (f"stepstream dev is already running in {where} (pid {holder.get('pid', '?')}, "
            f"api {holder.get('api', '?')}); stop it first, or run this one in another "
            f"folder (lock {path})")


def lock_paths(state_dir: Path) -> list[Path]:
    """The locks a dev session takes: its folder's, and the one beside its state
    folder (the same file for the default ``.stepstream/state``)."""
    return [Path(DEV_DIR) / LOCK_NAME, state_dir.absolute().parent / LOCK_NAME]


def port_in_use(port: int, host: str) -> bool:
    """Whether something listens on ``host:port`` (a port in TIME_WAIT counts as free,
    as it does for the servers we start, which set SO_REUSEADDR)."""
    if port == 0:
        return False
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return False  # the server's own bind reports a bad host
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError:
            return True
    return False


def check_ports(ports: list[tuple[str, str, int]]) -> None:
    """``(what, host, port)`` each free, or :class:`DevBusyError` for the first taken."""
    for what, host, port in ports:
        if port_in_use(port, host):
            raise DevBusyError(f"port {port} on {host} is in use ({what}); stop what uses "
                               f"it, or choose another port")


def dev_files(home: Mapping[str, str]) -> dict[str, list[Path]]:
    """Where a dev session records its broker and API addresses: its folder and the
    per-user folder under ``$HOME``."""
    folders = [Path(".")]
    if home.get("HOME"):
        folders.append(Path(home["HOME"]))
    return {name: [f / name for f in folders] for name in (DEV_BROKER_FILE, DEV_API_FILE)}


def write_file(path: Path, text: str) -> None:
    """Replace ``path``'s content at once (readers never see half a line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)


def remove_if_ours(path: Path, text: str) -> None:
    """Remove ``path`` if it still holds ``text`` (a later session may have replaced it)."""
    with contextlib.suppress(OSError):
        if path.read_text().strip() == text:
            path.unlink()
