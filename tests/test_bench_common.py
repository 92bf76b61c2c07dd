from bench.common import alternate, percentile


def test_alternate_interleaves_the_variants():
    calls = []
    times = alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3)
    assert calls == ["a", "b"] * 3 and {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}


def test_percentiles():
    values = list(range(1, 101))
    assert percentile(values, 0.5) in (50, 51) and percentile(values, 0.95) == 95 and percentile([7], 0.95) == 7


def test_process_start_time_lies_between_the_readings_around_its_spawn():
    import os
    import subprocess
    import sys

    from bench.common import boottime, peak_rss_mib, process_start_boottime, rss_mib

    before = boottime()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    after = boottime()
    try:
        started = process_start_boottime(child.pid)
        assert before - 0.011 <= started <= after + 0.011  # clock ticks are 10 ms
    finally:
        child.kill()
        child.wait()
    assert 10 < rss_mib(os.getpid()) <= peak_rss_mib(os.getpid())  # this test process: tens of MiB


def test_the_aerial_steps_run_with_what_they_are_measured_against(monkeypatch):
    import pytest

    from bench.aerial_steps import AGAINST, STEPS, chosen

    assert list(chosen()) == list(STEPS) and set(AGAINST) == set(STEPS) - {"default"}
    monkeypatch.setenv("BENCH_AERIAL_STEPS", "crops + target_gsd, + orientations")
    assert list(chosen()) == ["default", "+ orientations", "crops", "crops + target_gsd"]  # in the table's order
    monkeypatch.setenv("BENCH_AERIAL_STEPS", "rotations")
    with pytest.raises(ValueError, match="unknown step"):
        chosen()
