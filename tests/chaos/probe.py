"""``python -m tests.chaos.probe URL OUT [EVERY_S]``: GET ``URL`` every ``EVERY_S`` seconds
(0.2) until killed, appending ``start_epoch_ms latency_ms status`` per request to ``OUT``
(status 0: no answer within 2 s). A process of its own, so that what it measures is the
engine's answer, not the campaign's own threads waiting for the GIL."""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request


def main(url: str, out: str, every: float = 0.2) -> None:
    with open(out, "a", buffering=1) as f:
        while True:
            start_ms, began = time.time_ns() // 1_000_000, time.perf_counter()
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    r.read()
                    code = r.status
            except urllib.error.HTTPError as exc:
                code = exc.code
            except OSError:
                code = 0
            f.write(f"{start_ms} {(time.perf_counter() - began) * 1000:.1f} {code}\n")
            time.sleep(every)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(float(a) for a in sys.argv[3:4]))
