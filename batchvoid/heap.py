"""The garbage collector, set for a long steady stretch: a run's sending, the simulator's serving.

Both make objects by the thousand that die young, and at CPython's defaults a collection goes
over the live ones again and again:

- a run of 100,000 voids (160 in flight) collected its young generation 627 times, each pass
  over the ~6,000 objects of the voids in flight (1.4 ms): 0.5-0.9 s of the loop's 16 s, and
  0.8-1.2 s with the full collections of the start-up heap. DEBUG_SAVEALL found no cycle in
  it. With `steady_heap()`, the same run collected 3 times.
- the simulator's full collections of its start-up heap held its loop 36-51 ms, twice in a
  100 s benchmark. A provider stamps a request when it arrives, so the requests that came
  meanwhile were stamped together, and a client sending at exactly the limit drew 429s its
  sends did not earn.

Cycles that do come (an exception's traceback) are freed all the same, a little later.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_COLLECTION_AT = 10_000  # new objects that start a collection (CPython's default: 700)


@contextmanager
def steady_heap() -> Iterator[None]:
    """What is there on entry stays out of every collection, and the young generation is
    collected at YOUNG_COLLECTION_AT objects; the process's settings are back on exit."""
    threshold = gc.get_threshold()
    # No collection first: in the test suite's heap one took up to 164 ms before a run's first
    # request. What garbage there is stays frozen until the end, and is collected after it.
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_AT, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()
