"""The rules that choose tiles for labelling, on candidates made by hand: each rule's reason, its order, the spread
over the area, and the count."""

from __future__ import annotations

import pytest

from labelling.acceptance import compare_image
from labelling.selection import Candidate, Rule, choose, distance_m, iou, unmatched


def box(cls: str, score: float, x: float, y: float, w: float = 10, h: float = 10) -> list:
    return [cls, score, x, y, w, h]


def test_uncertain_tiles_first_the_ones_with_most_doubt():
    sure = Candidate("sure", [box("waste", 0.95, 0, 0)])
    one = Candidate("one", [box("waste", 0.62, 0, 0), box("waste", 0.9, 20, 20)])
    two = Candidate("two", [box("waste", 0.35, 0, 0), box("waste", 0.66, 20, 20)])
    middle = Candidate("middle", [box("waste", 0.51, 0, 0)])
    chosen = choose(Rule("uncertain", band=(0.3, 0.7)), [sure, one, two, middle])
    assert [c.key for c in chosen] == ["two", "middle", "one"]  # most doubtful boxes, then nearest the middle


def test_disagreement_counts_both_ways_and_by_class():
    agree = Candidate("agree", [box("waste", 0.9, 0, 0)], others=[box("waste", 0.8, 1, 1)])
    other_class = Candidate("class", [box("waste", 0.9, 0, 0)], others=[box("rubble", 0.8, 0, 0)])
    missed = Candidate("missed", [box("waste", 0.9, 0, 0)], others=[box("waste", 0.8, 0, 0), box("waste", 0.7, 50, 50)])
    chosen = choose(Rule("disagreement"), [agree, missed, other_class])
    assert [c.key for c in chosen] == ["class", "missed"]  # 2 disagreements (one each way), then 1
    assert unmatched([box("a", 1, 0, 0)], [box("a", 1, 6, 0)]) == 1  # IoU 4/16 < 0.5


def test_weak_classes_pick_tiles_with_most_boxes_of_them():
    few = Candidate("few", [box("tyres", 0.9, 0, 0), box("waste", 0.9, 20, 20)])
    many = Candidate("many", [box("tyres", 0.9, 0, 0), box("tyres", 0.5, 20, 20)])
    none = Candidate("none", [box("waste", 0.9, 0, 0)])
    assert [c.key for c in choose(Rule("weak_classes", classes=("tyres",)), [few, none, many])] == ["many", "few"]


def test_spread_skips_tiles_near_a_chosen_one_and_count_stops():
    # Centres 0.0001° of latitude apart are about 11 m apart.
    tiles = [
        Candidate(f"t{i}", [box("waste", 0.9 - i / 100, 0, 0)], centre=(14.5, 46.0 + i * 0.0001)) for i in range(6)
    ]
    assert distance_m(tiles[0].centre, tiles[1].centre) == pytest.approx(11.1, abs=0.1)
    assert [c.key for c in choose(Rule("all", min_distance_m=20), tiles)] == ["t0", "t2", "t4"]
    assert [c.key for c in choose(Rule("all", count=2), tiles)] == ["t0", "t1"]
    unplaced = Candidate("nowhere", [box("waste", 0.5, 0, 0)])
    assert "nowhere" in [c.key for c in choose(Rule("all", min_distance_m=1e6), [*tiles, unplaced])]


def test_what_came_back_is_paired_best_overlap_first():
    sent = [box("waste", 0.9, 0, 0, 100, 100), box("waste", 0.8, 200, 0, 100, 100), box("waste", 0.4, 400, 0)]
    back = [
        ["waste", 1, 1, 99, 99],  # IoU 0.98: unchanged
        ["rubble", 200, 0, 100, 100],  # same place, another class: corrected
        ["waste", 600, 600, 30, 30],  # drawn by the person: added
    ]
    counts = compare_image(sent, back)
    assert counts == {"exported": 3, "unchanged": 1, "corrected": 1, "removed": 1, "added": 1}
    assert iou([0, 0, 10, 10], [5, 0, 10, 10]) == pytest.approx(1 / 3)
