"""Generated aerial ground, drawn at any ground resolution (for ``bench/aerial.py``).

The ground is defined in metres: fields and bare soil as smooth colour waves, roads, roofs, trees and waste piles
(irregular outlines of 1 to 3.5 m filled with items of 0.2 to 0.5 m), and what a pile is not: bare soil
patches of its colour, cars of its items' colours. A tile or an orthophoto is that ground drawn
at a ground sample distance: the same pile is 20 to 70 px at 5 cm, 10 to 35 px at 10 cm. Each pixel's sensor noise
is drawn at the pixel's scale, as a camera's is. Numpy and Pillow only; no Django.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SCENES_VERSION = 2  # raise it when the drawing changes: the bench builds its dataset again
PILE_SIZE_M = (1.0, 3.5)
# Mostly debris (concrete, soil, wood, dark rubber), some plastic: a pile is told from bare soil by its texture.
PILE_COLOURS = [(170, 165, 155), (120, 110, 95), (150, 120, 85), (60, 60, 60), (200, 200, 195), (70, 100, 160)]
CAR_COLOURS = [(220, 220, 220), (170, 40, 35), (50, 70, 140), (30, 30, 30), (160, 160, 165)]


@dataclass(frozen=True)
class Pile:
    x: float  # centre, metres east of the ground's origin
    y: float  # centre, metres south of it
    outline: tuple[tuple[float, float], ...]  # metres, relative to the centre
    items: tuple[tuple[float, float, float, int], ...]  # (dx, dy, size m, colour index)

    def box_m(self) -> tuple[float, float, float, float]:
        xs, ys = [self.x + p[0] for p in self.outline], [self.y + p[1] for p in self.outline]
        return min(xs), min(ys), max(xs), max(ys)


def _pile(rng: np.random.Generator, x: float, y: float) -> Pile:
    radius = rng.uniform(*PILE_SIZE_M) / 2
    stretch = rng.uniform(0.7, 1.0)  # piles are seldom round
    turn = rng.uniform(0, math.pi)
    outline = []
    for k in range(14):
        angle = 2 * math.pi * k / 14
        r = radius * rng.uniform(0.75, 1.0)
        px, py = r * math.cos(angle), r * stretch * math.sin(angle)
        outline.append((px * math.cos(turn) - py * math.sin(turn), px * math.sin(turn) + py * math.cos(turn)))
    items = []
    for _ in range(int(radius * radius * 14)):  # inside the outline (at least 0.75 of the radius everywhere)
        r, angle = 0.6 * radius * stretch * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
        items.append((r * math.cos(angle), r * math.sin(angle), rng.uniform(0.2, 0.5), int(rng.integers(6))))
    return Pile(x, y, tuple(outline), tuple(items))


class Ground:
    """A patch of ground of ``width_m`` x ``height_m`` with ``piles`` waste piles kept ``margin_m`` from its edges."""

    def __init__(self, seed: int, width_m: float, height_m: float, piles: int, margin_m: float = 3.0):
        rng = np.random.default_rng(seed)
        self.width_m, self.height_m = width_m, height_m
        self.waves = [
            (rng.uniform(0.03, 0.25), rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi), rng.uniform(0.3, 1))
            for _ in range(6)
        ]
        self.soil, self.grass = rng.uniform(0.35, 0.65), (rng.uniform(70, 100), rng.uniform(110, 140))
        self.roads = [
            (rng.uniform(0, width_m), rng.uniform(0, math.pi), rng.uniform(4, 7))
            for _ in range(int(rng.integers(0, 3)))
        ]
        self.roofs = [
            (
                rng.uniform(0, width_m),
                rng.uniform(0, height_m),
                rng.uniform(6, 15),
                rng.uniform(6, 12),
                int(rng.integers(3)),
            )
            for _ in range(int(width_m * height_m / 900))
        ]
        self.trees = [
            (rng.uniform(0, width_m), rng.uniform(0, height_m), rng.uniform(1.5, 4))
            for _ in range(int(width_m * height_m / 250))
        ]
        # What a pile is not: bare soil patches of its colour without its items, and cars of its items' colours
        # without its outline.
        self.patches = [
            _pile(rng, rng.uniform(0, width_m), rng.uniform(0, height_m)) for _ in range(int(width_m * height_m / 300))
        ]
        self.cars = [
            (*rng.uniform((0, 0, 0), (width_m, height_m, math.pi)), int(rng.integers(len(CAR_COLOURS))))
            for _ in range(int(width_m * height_m / 400))
        ]
        self.piles: list[Pile] = []
        while len(self.piles) < piles:
            x, y = rng.uniform(margin_m, width_m - margin_m), rng.uniform(margin_m, height_m - margin_m)
            if all(math.hypot(x - p.x, y - p.y) > 8 for p in self.piles):
                self.piles.append(_pile(rng, x, y))

    def draw(self, gsd: float, x0: float = 0.0, y0: float = 0.0, width: int | None = None, height: int | None = None):
        """The ground from (x0, y0) metres at ``gsd`` metres per pixel: an RGB uint8 array and the piles' boxes in
        its pixels (x1, y1, x2, y2), those whole inside it only."""
        width = width or round((self.width_m - x0) / gsd)
        height = height or round((self.height_m - y0) / gsd)
        xs = x0 + (np.arange(width) + 0.5) * gsd
        ys = y0 + (np.arange(height) + 0.5) * gsd
        gx, gy = np.meshgrid(xs, ys)
        field = sum(a * np.sin(f * (gx * math.cos(d) + gy * math.sin(d)) + p) for f, d, p, a in self.waves)
        mix = 1 / (1 + np.exp(-(field - self.soil)))  # 0: grass, 1: soil
        rgb = np.stack(
            [
                self.grass[0] + mix * 80,
                self.grass[1] + mix * 20,
                50 + mix * 40,
            ],
            axis=-1,
        )
        image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
        pen = ImageDraw.Draw(image)

        def px(x: float, y: float) -> tuple[float, float]:
            return (x - x0) / gsd, (y - y0) / gsd

        for rx, angle, w in self.roads:
            dx, dy = math.cos(angle) * 2000, math.sin(angle) * 2000
            pen.line([px(rx - dx, -dy), px(rx + dx, dy)], fill=(150, 150, 145), width=max(1, round(w / gsd)))
        for tx, ty, r in self.trees:
            pen.ellipse([px(tx - r, ty - r), px(tx + r, ty + r)], fill=(35, 75, 35))
            pen.ellipse([px(tx - r / 2, ty - r / 2), px(tx + r / 2, ty + r / 2)], fill=(55, 100, 50))
        for rx, ry, w, h, kind in self.roofs:
            colour = [(170, 70, 55), (120, 120, 125), (200, 200, 195)][kind]
            pen.rectangle([px(rx, ry), px(rx + w, ry + h)], fill=colour)
        for patch in self.patches:
            pen.polygon([px(patch.x + ox, patch.y + oy) for ox, oy in patch.outline], fill=(145, 128, 100))
        for cx_m, cy_m, angle, paint in self.cars:
            corners = [(-2.2, -0.9), (2.2, -0.9), (2.2, 0.9), (-2.2, 0.9)]
            turned = [
                px(cx_m + x * math.cos(angle) - y * math.sin(angle), cy_m + x * math.sin(angle) + y * math.cos(angle))
                for x, y in corners
            ]
            pen.polygon(turned, fill=CAR_COLOURS[paint])
        boxes = []
        for pile in self.piles:
            outline = [px(pile.x + ox, pile.y + oy) for ox, oy in pile.outline]
            pen.polygon(outline, fill=(140, 130, 110))
            for dx, dy, size, paint in pile.items:
                cx, cy = px(pile.x + dx, pile.y + dy)
                half = max(0.5, size / gsd / 2)
                pen.rectangle([cx - half, cy - half, cx + half, cy + half], fill=PILE_COLOURS[paint])
            x1, y1, x2, y2 = pile.box_m()
            (bx1, by1), (bx2, by2) = px(x1, y1), px(x2, y2)
            if bx1 >= 0 and by1 >= 0 and bx2 <= width and by2 <= height:
                boxes.append((bx1, by1, bx2, by2))
        pixels = np.asarray(image, dtype=np.float32)
        noise = np.random.default_rng(round(gsd * 1e4) + width).normal(0, 6, pixels.shape)
        return np.clip(pixels + noise, 0, 255).astype(np.uint8), boxes


def jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=quality)
    return out.getvalue()
