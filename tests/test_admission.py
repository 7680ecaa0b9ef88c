"""Admission control on a simulated clock: a burst is cut to what can be answered in time, at once."""

from __future__ import annotations

from serve.admission import Admission


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_an_idle_service_always_admits_and_an_unmeasured_one_caps_the_burst():
    a = Admission(timeout_s=30, initial_limit=8, clock=Clock())
    decisions = [a.admit() for _ in range(20)]
    assert [d.admitted for d in decisions] == [True] * 8 + [False] * 12
    assert decisions[0].alone and not decisions[1].alone
    assert all(d.retry_after_s >= 1 for d in decisions[8:])


def test_a_burst_is_cut_to_what_the_measured_rate_answers_within_the_deadline():
    clock = Clock()
    a = Admission(timeout_s=30, headroom=0.8, clock=clock)
    first = a.admit()  # a lone request: 4 s
    clock.t = 4.0
    a.finished(first, 4.0, answered=True)
    assert a.base_s == 4.0 and a.answers_per_s is None  # nothing measured under load yet
    admitted = [a.admit() for _ in range(16)]
    assert sum(d.admitted for d in admitted) == 8  # unmeasured: initial_limit
    for i, d in enumerate(d for d in admitted if d.admitted):  # batches of 4 answers every 4 s
        clock.t = 4.0 + 4 * (i // 4 + 1)
        a.finished(d, clock.t - 4.0, answered=True)
    assert a.in_flight == 0
    assert a.answers_per_s == 7 / 4  # gaps after the first answer: 0, 0, 0, 4, 0, 0, 0 -> 7 answers in 4 s
    burst = [a.admit() for _ in range(64)]
    taken = sum(d.admitted for d in burst)
    # the deadline is 24 s: a base of 4 s + n already in flight / 1.75 answers/s -> admitted while n <= 35
    assert taken == 36 and a.in_flight == 36
    refused = [d for d in burst if not d.admitted]
    assert all(1 <= d.retry_after_s <= 10 for d in refused)


def test_requests_that_fail_or_leave_do_not_count_as_answers():
    clock = Clock()
    a = Admission(timeout_s=30, clock=clock)
    d = a.admit()
    clock.t = 30.0
    a.finished(d, 30.0, answered=False)  # a timeout: no base latency, no rate
    assert a.base_s is None and a.answers_per_s is None and a.in_flight == 0


def test_idle_time_between_requests_is_not_taken_for_service_time():
    clock = Clock()
    a = Admission(timeout_s=30, clock=clock)
    for start in (0.0, 100.0, 200.0):  # one request at a time, far apart
        clock.t = start
        d = a.admit()
        clock.t = start + 2.0
        a.finished(d, 2.0, answered=True)
    assert a.answers_per_s is None and a.base_s == 2.0  # the 100 s gaps were idle time, not service time
