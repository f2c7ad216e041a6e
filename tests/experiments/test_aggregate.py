"""Mean, standard deviation and t confidence intervals over seeds; grouping runs by grid point."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dlnflow.experiments.aggregate import best_point, group_points, markdown_table, summarize, t_quantile

# two-sided 95% (p = 0.975) and one 90% quantile of Student's t, from published tables
TABLE = {(0.975, 1): 12.7062, (0.975, 2): 4.3027, (0.975, 4): 2.7764, (0.975, 9): 2.2622,
         (0.975, 29): 2.0452, (0.975, 60): 2.0003, (0.975, 120): 1.9799, (0.95, 5): 2.0150}


@pytest.mark.parametrize(("key", "expected"), TABLE.items())
def test_t_quantiles_match_the_tables(key: tuple[float, int], expected: float) -> None:
    assert t_quantile(*key) == pytest.approx(expected, abs=1e-4)


def test_t_quantile_tends_to_the_normal() -> None:
    assert t_quantile(0.975, 10_000) == pytest.approx(1.95996, abs=1e-3)
    with pytest.raises(ValueError):
        t_quantile(0.975, 0)


def test_summary_of_three_seeds() -> None:
    values = [0.60, 0.70, 0.65]
    s = summarize(values)
    assert s.mean == pytest.approx(0.65)
    assert s.std == pytest.approx(float(np.std(values, ddof=1)))
    assert s.half_width == pytest.approx(4.302653 * 0.05 / math.sqrt(3), rel=1e-6)
    assert s.low == pytest.approx(0.65 - s.half_width) and s.high == pytest.approx(0.65 + s.half_width)
    assert s.text() == "65.0 ± 12.4"
    one = summarize([0.5])
    assert one.std is None and one.half_width is None and one.text() == "50.0"
    assert one.as_dict()["ci_low"] is None


def test_group_points_best_and_table() -> None:
    rows = [
        ({"k": 1}, 1, {"dev": 0.5, "test": 0.4, "dev_before": 0.3, "test_before": 0.3}),
        ({"k": 1}, 2, {"dev": 0.7, "test": 0.6, "dev_before": 0.3, "test_before": 0.3}),
        ({"k": 2}, 1, {"dev": 0.8, "test": 0.1, "dev_before": 0.3, "test_before": 0.3}),
        ({"k": 2}, 2, None),  # not finished
    ]
    points = group_points(rows)
    assert [p.settings for p in points] == [{"k": 1}, {"k": 2}]
    assert points[0].seeds == [1, 2] and points[1].missing == [2]
    assert points[0].metrics["dev"].mean == pytest.approx(0.6)
    assert points[1].metrics["dev"].n == 1
    assert best_point(points) == 1
    assert best_point(points, "test") == 0
    table = markdown_table(points, lambda s: f"k={s['k']}")
    assert "| k=1 | 1,2 | 60.0 ± 127.1 | 50.0 ± 127.1 | 30.0 ± 0.0 | 30.0 ± 0.0 |" in table
    assert "| k=2 | 1 (missing 2) | 80.0 |" in table
