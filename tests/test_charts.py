from core.charts import Series, _ticks, line_chart


def test_chart_draws_one_polyline_per_series_and_escapes_labels():
    svg = line_chart(
        [Series("<script>alert(1)</script>", [(1, 0.5), (2, 0.7)]), Series("b", [(1, 0.1)])],
        title='t "x"',
        x_label="epoch",
        y_label="mAP50",
        y_min=0,
        y_max=1,
    )
    assert svg.count("<polyline") == 2 and "<script>" not in svg and "&lt;script&gt;" in svg
    assert 'aria-label="t &quot;x&quot;"' in svg


def test_empty_chart_says_so():
    assert "No data yet." in line_chart([Series("a", [])], title="t", x_label="x", y_label="y")


def test_ticks_cover_the_range_with_round_steps():
    ticks = _ticks(0.013, 0.87)
    assert ticks[0] <= 0.013 and ticks[-1] >= 0.87 and len(ticks) <= 8
    steps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:], strict=False)}
    assert len(steps) == 1 and steps.pop() in (0.1, 0.2, 0.25, 0.5)  # one round step
    flat = _ticks(5, 5)  # a flat series still gets an axis around its value
    assert len(flat) >= 2 and flat[0] <= 5 <= flat[-1] and flat[0] < flat[-1]
