from bench.common import alternate, percentile


def test_alternate_interleaves_the_variants():
    calls = []
    times = alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3)
    assert calls == ["a", "b"] * 3 and {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}


def test_percentiles():
    values = list(range(1, 101))
    assert percentile(values, 0.5) in (50, 51) and percentile(values, 0.95) == 95 and percentile([7], 0.95) == 7
