"""Read ahead on a thread: decoding the next frames while the model works on the current batch."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any


def prefetch(items: Iterable[Any], depth: int) -> Iterator[Any]:
    """Run `items` (reading + decoding) on a thread, `depth` items ahead of the consumer.

    Decoding (OpenCV) and inference (torch) both release the GIL, so the next batch is decoded while
    the current one is classified. Exceptions of the producer are re-raised in the consumer; closing
    the generator stops the producer.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((None, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((None, done))
        except BaseException as exc:
            q.put((exc, None))

    thread = threading.Thread(target=produce, name="bag-reader", daemon=True)
    thread.start()
    try:
        while True:
            exc, item = q.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
