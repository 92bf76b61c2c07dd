"""Which tiles to label: candidates ranked by a rule, spread over the area, the first N kept.

A candidate is a tile (a window of an orthophoto or a dataset image) with the model's boxes on it
(``[class, score, x, y, w, h]``), the other model's boxes where two are compared, and its centre (longitude,
latitude) where it is known. The rules, each a reason a person's time is well spent on the tile:

- ``uncertain``: boxes whose score lies in a band (the model can't decide); more of them first, then the one
  nearest the middle of the band;
- ``disagreement``: two models disagree: boxes of one with no box of the same class (IoU at least 0.5) in the
  other, counted both ways; most first;
- ``weak_classes``: boxes of the classes with the lowest average precision on the model's validation split; most
  first;
- ``all``: every tile with a box, highest score first.

``min_distance_m`` then walks the ranking and skips a tile whose centre is closer than that to one already chosen,
so N tiles are not N views of one heap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

RULES = ("all", "uncertain", "disagreement", "weak_classes")
EARTH_RADIUS_M = 6_371_008.8


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter)


def unmatched(boxes: Sequence[Sequence], others: Sequence[Sequence], threshold: float = 0.5) -> int:
    """How many of ``boxes`` have no box of the same class in ``others`` at IoU ``threshold`` or more (each
    other box matched once, best pairs first)."""
    pairs = sorted(
        ((iou(a[2:6], b[2:6]), i, j) for i, a in enumerate(boxes) for j, b in enumerate(others) if a[0] == b[0]),
        reverse=True,
    )
    used_a: set[int] = set()
    used_b: set[int] = set()
    for value, i, j in pairs:
        if value < threshold:
            break
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
    return len(boxes) - len(used_a)


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance between two (longitude, latitude) points, metres."""
    lon1, lat1, lon2, lat2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


@dataclass
class Candidate:
    key: str
    boxes: list[list]
    others: list[list] = field(default_factory=list)
    centre: tuple[float, float] | None = None
    data: dict = field(default_factory=dict)  # what the caller needs to cut or copy the picture


@dataclass(frozen=True)
class Rule:
    name: str = "all"
    count: int = 100
    band: tuple[float, float] = (0.3, 0.7)
    classes: tuple[str, ...] = ()  # the weak classes, for weak_classes
    min_distance_m: float = 0.0


def rank(rule: Rule, candidate: Candidate) -> tuple | None:
    """The candidate's sort key under ``rule`` (smaller first), or None when the rule has no reason to pick it."""
    boxes = candidate.boxes
    if rule.name == "uncertain":
        low, high = rule.band
        middle = (low + high) / 2
        inside = [abs(b[1] - middle) for b in boxes if low <= b[1] <= high]
        return (-len(inside), min(inside)) if inside else None
    if rule.name == "disagreement":
        score = unmatched(boxes, candidate.others) + unmatched(candidate.others, boxes)
        return (-score,) if score else None
    if rule.name == "weak_classes":
        weak = sum(1 for b in boxes if b[0] in rule.classes)
        return (-weak,) if weak else None
    return (-max(b[1] for b in boxes),) if boxes else None


def choose(rule: Rule, candidates: Sequence[Candidate]) -> list[Candidate]:
    """Up to ``rule.count`` candidates, best first, no two closer than ``rule.min_distance_m`` where both have a
    centre."""
    ranked = sorted(
        ((key, index) for index, c in enumerate(candidates) if (key := rank(rule, c)) is not None),
    )
    chosen: list[Candidate] = []
    for _key, index in ranked:
        candidate = candidates[index]
        if rule.min_distance_m > 0 and candidate.centre is not None:
            near = any(
                c.centre is not None and distance_m(c.centre, candidate.centre) < rule.min_distance_m for c in chosen
            )
            if near:
                continue
        chosen.append(candidate)
        if len(chosen) >= rule.count:
            break
    return chosen
