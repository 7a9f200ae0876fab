"""Which web workers are pinned, and to which CPU (config/cpus.py)."""

from __future__ import annotations

import os
import threading

import pytest

from config.cpus import next_cpu, should_pin, usable_cpus


@pytest.mark.parametrize(
    ("workers", "threads", "cpus", "pinned"),
    [
        (2, 4, 2, True),  # threaded workers fill the machine: one CPU each
        (4, 4, 2, True),
        (2, 4, 8, False),  # spare CPUs: the scheduler may move a worker off a busy one
        (2, 1, 2, False),  # sync workers: no second thread to hand the GIL to
        (1, 4, 1, True),
    ],
)
def test_auto_pins_threaded_workers_only_when_they_fill_the_cpus(
    workers: int, threads: int, cpus: int, pinned: bool
) -> None:
    assert should_pin("auto", workers=workers, threads=threads, cpus=cpus) is pinned


def test_on_and_off_are_obeyed_whatever_the_counts() -> None:
    assert should_pin("on", workers=2, threads=1, cpus=8) is True
    assert should_pin("off", workers=8, threads=4, cpus=2) is False


def test_each_worker_gets_the_least_used_cpu() -> None:
    usable = [0, 1]
    first = next_cpu(usable, [])
    second = next_cpu(usable, [first])
    third = next_cpu(usable, [first, second])
    assert (first, second, third) == (0, 1, 0)


def test_a_replacement_worker_takes_the_cpu_its_dead_predecessor_left() -> None:
    # Workers on 0, 1, 2; the one on 1 died: its replacement goes to 1, not back to 0.
    assert next_cpu([0, 1, 2], [0, 2]) == 1
    assert next_cpu([0, 1, 2, 3], [0, 1, 2, 3, 0, 1, 3]) == 2


def test_cpus_outside_the_usable_set_and_unpinned_workers_are_ignored() -> None:
    assert next_cpu([2, 5], [None, 7, 2]) == 5


def test_no_usable_cpu_is_refused() -> None:
    with pytest.raises(ValueError, match="no CPU"):
        next_cpu([], [])


def test_the_usable_cpus_are_the_ones_the_process_was_confined_to() -> None:
    # As a container's cpuset or taskset would. On Linux the affinity is a thread's own: a
    # thread of this test is confined, the rest of the run is not.
    one = max(os.sched_getaffinity(0))
    seen: list[list[int]] = []

    def confined() -> None:
        os.sched_setaffinity(0, {one})
        seen.append(usable_cpus())

    thread = threading.Thread(target=confined)
    thread.start()
    thread.join()
    assert seen == [[one]]
    assert usable_cpus() == sorted(os.sched_getaffinity(0))
