"""The background prefetcher shared by the engine and training."""

import threading

import pytest

from engine.run.prefetch import Prefetcher


def test_items_arrive_in_order_and_are_made_off_the_consumer_thread():
    makers = set()

    def source():
        for i in range(10):
            makers.add(threading.get_ident())
            yield i

    assert list(Prefetcher(source(), depth=2)) == list(range(10))
    assert makers and threading.get_ident() not in makers


def test_a_source_error_is_raised_in_the_consumer_after_the_items_before_it():
    def source():
        yield 1
        raise ValueError("broken tile")

    seen = []
    with pytest.raises(ValueError, match="broken tile"):
        for item in Prefetcher(source()):
            seen.append(item)
    assert seen == [1]


def test_close_stops_the_thread_while_the_queue_is_full():
    made = []

    def endless():
        while True:
            made.append(len(made))
            yield made[-1]

    prefetch = Prefetcher(endless(), depth=2)
    first = next(iter(prefetch))
    prefetch.close()
    assert first == 0
    assert not prefetch._thread.is_alive()
    assert len(made) <= 4  # depth 2 in the queue, one taken, one waiting to be put
