"""``all_done``: the API awaits a batch's broker acknowledgements on the event loop,
resolved from the producer's thread, without holding an API thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

from engine.api.ingest import all_done


def test_done_once_every_future_is_done_from_another_thread() -> None:
    async def main() -> None:
        assert (await asyncio.wait_for(all_done([]), 1)) is None
        futures: list[concurrent.futures.Future[None]] = [
            concurrent.futures.Future() for _ in range(500)]
        waiting = all_done(futures)
        for fut in futures[:-1]:
            fut.set_result(None)
        await asyncio.sleep(0)  # a chance to settle early, which it must not take
        assert not waiting.done()
        last = threading.Thread(target=futures[-1].set_exception, args=(OSError("x"),))
        last.start()
        await asyncio.wait_for(waiting, 5)  # a failed delivery is done too
        last.join()
        assert futures[-1].exception() is not None

    asyncio.run(main())
