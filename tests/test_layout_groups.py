"""Groups of moved items (`renderers.geometry.group`): a panel moved into place keeps its
items, boxes and anchors in groups shifted only when the diagram is finished. What comes out
must be what moving every item at every level gives, to the last bit: the coordinates of
every item (the sign of a zero too) and the vertical extent a panel reads from its items (a
difference of one unit in the last place can round a coordinate the other way in the
SVG)."""

from __future__ import annotations

import random

import pytest
from ncd.renderers.geometry import (
    Anchor,
    AnchorEntry,
    Box,
    BoxEntry,
    Circle,
    Drawn,
    Group,
    Item,
    MovedBoxes,
    Path,
    Polygon,
    PortPoint,
    Rect,
    Stroke,
    Text,
    group,
    moved_anchors,
    moved_boxes,
    opened,
    path_ends,
    placed_anchors,
    placed_boxes,
    placed_items,
)
from ncd.renderers.text import Label

INK = Stroke("#000000", 1.0)


def _coordinate(rng: random.Random) -> float:
    # Values with long binary expansions (sums of them round), as label widths give, and
    # zeros of either sign (a move across only; -0.0 + 0.0 is +0.0, which the SVG shows).
    if rng.random() < 0.2:
        return rng.choice((0.0, -0.0))
    return rng.uniform(-300.0, 300.0) + rng.choice((0.0, 0.1, 1 / 3, 0.7, 1e-3))


def _item(rng: random.Random) -> Item:
    kind = rng.randrange(5)
    c = lambda: _coordinate(rng)  # noqa: E731
    if kind == 0:
        segments = tuple((c(), c()) if rng.random() < 0.5 else (c(), c(), c(), c(), c(), c())
                         for _ in range(rng.randrange(0, 4)))
        return Path((c(), c()), segments, INK, role=rng.choice(("axis", "sep", None)),
                    wire=rng.randrange(50))
    if kind == 1:
        return Rect(c(), c(), abs(c()) / 3 + 0.1, abs(c()) / 3 + 0.1, None, INK)
    if kind == 2:
        return Circle(c(), c(), rng.choice((2.1, 2.5, 7.5, 0.3)), None, INK)
    if kind == 3:
        return Polygon(tuple((c(), c()) for _ in range(3)), None, INK)
    label = Label.plain("x")
    return Text(label, c(), c(), 11.0, "#000000", abs(c()) / 10, 7.755 + rng.random(),
                2.387 + rng.random())


def _eager(items: list[Item], shifts: list[tuple[float, float]]) -> list[Item]:
    for dx, dy in shifts:
        items = [item.moved(dx, dy) for item in items]
    return items


def _extent(items: list[Drawn]) -> tuple[float, float]:
    extents = [item.y_extent() for item in items]
    return min(e[0] for e in extents), max(e[1] for e in extents)


def _nest(rng: random.Random, depth: int) -> tuple[list[Drawn], list[Item]]:
    """Items moved `depth` times, some levels adding new items: lazily (groups) and eagerly
    (every item moved at every level), in the same order."""
    lazy: list[Drawn] = []
    eager: list[Item] = []
    for _ in range(depth):
        fresh = [_item(rng) for _ in range(rng.randrange(0, 6))]
        lazy.extend(fresh)
        eager.extend(fresh)
        dx, dy = _coordinate(rng), _coordinate(rng)
        lazy = group(lazy, dx, dy)
        eager = _eager(eager, [(dx, dy)])
    return lazy, eager


def _by_kind(items: list[Item]) -> tuple[list[Item], list[Item]]:
    """Labels and the rest, each in order (labels are drawn on a layer of their own, after
    everything else, so only these two orders show)."""
    return ([i for i in items if isinstance(i, Text)],
            [i for i in items if not isinstance(i, Text)])


@pytest.mark.parametrize("seed", range(40))
def test_placed_items_are_the_eagerly_moved_items(seed: int) -> None:
    rng = random.Random(seed)
    lazy, eager = _nest(rng, rng.randrange(1, 9))
    placed = placed_items(lazy)
    # to the last bit, the sign of a zero too (equality takes -0.0 for 0.0)
    assert repr(_by_kind(placed)) == repr(_by_kind(eager))
    assert not any(isinstance(item, Group) for item in placed)


@pytest.mark.parametrize("seed", range(40))
def test_a_group_reads_the_extent_of_its_moved_items(seed: int) -> None:
    rng = random.Random(seed)
    lazy, eager = _nest(rng, rng.randrange(1, 9))
    if not eager:
        return
    assert _extent(lazy) == _extent(list(eager))


@pytest.mark.parametrize("seed", range(20))
def test_path_ends_see_into_groups(seed: int) -> None:
    rng = random.Random(seed)
    lazy, eager = _nest(rng, rng.randrange(1, 7))
    expected = sorted((p.wire, p.end[0]) for p in eager
                      if isinstance(p, Path) and p.role == "sep")
    assert sorted(path_ends(lazy, "sep"), key=lambda e: (e[0] or 0, e[1])) \
        == sorted(expected, key=lambda e: (e[0] or 0, e[1]))


def test_no_items_make_no_group() -> None:
    assert group([], 1.5, 2.5) == []


def _labels_inside(item: Drawn) -> bool:
    return isinstance(item, Group) and any(isinstance(i, Text) for i in placed_items([item]))


@pytest.mark.parametrize("seed", range(20))
def test_opened_groups_hand_out_their_labels_and_draw_the_same(seed: int) -> None:
    rng = random.Random(seed)
    lazy, eager = _nest(rng, rng.randrange(1, 8))
    split = opened(lazy)
    assert not any(_labels_inside(item) for item in split)
    assert [item for item in split if isinstance(item, Text)] == _by_kind(eager)[0]
    assert placed_items(split) == placed_items(lazy)
    if eager:
        assert _extent(split) == _extent(list(eager))


def _box(rng: random.Random, box_id: int) -> Box:
    c = lambda: _coordinate(rng)  # noqa: E731
    ports = tuple(PortPoint(c(), c(), rng.randrange(50), "left")
                  for _ in range(rng.randrange(0, 3)))
    return Box(box_id, c(), c(), abs(c()) / 3 + 0.1, abs(c()) / 3 + 0.1, "glyph", ports,
               len(ports))


@pytest.mark.parametrize("seed", range(20))
def test_moved_boxes_and_anchors_are_the_eagerly_moved_ones(seed: int) -> None:
    rng = random.Random(seed)
    lazy_boxes: list[BoxEntry] = []
    lazy_anchors: list[AnchorEntry] = []
    boxes: list[Box] = []
    anchors: list[Anchor] = []
    for level in range(rng.randrange(1, 8)):
        fresh = [_box(rng, 10 * level + k) for k in range(rng.randrange(0, 3))]
        points = [Anchor(_coordinate(rng), _coordinate(rng)) for _ in range(rng.randrange(3))]
        lazy_boxes.extend(fresh)
        boxes.extend(fresh)
        lazy_anchors.extend(points)
        anchors.extend(points)
        dx, dy = _coordinate(rng), _coordinate(rng)
        lazy_boxes, lazy_anchors = moved_boxes(lazy_boxes, dx, dy), \
            moved_anchors(lazy_anchors, dx, dy)
        boxes = [box.moved(dx, dy) for box in boxes]
        anchors = [anchor.moved(dx, dy) for anchor in anchors]
    assert repr(placed_boxes(lazy_boxes)) == repr(boxes)
    assert repr(placed_anchors(lazy_anchors)) == repr(anchors)
    if boxes:  # the extent a panel reads from its boxes
        (moved,) = lazy_boxes
        assert isinstance(moved, MovedBoxes)
        assert moved.y_extent() == (min(b.y for b in boxes),
                                    max(b.y + b.height for b in boxes))
