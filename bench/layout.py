"""Layout quality as numbers: every gallery diagram, default and expanded, measured.

    python -m bench.layout                    # writes bench/LAYOUT.md, before and after
    python bench/layout.py --before REV       # "before" = the renderer of git revision REV
    python bench/layout.py --no-before --json out.json
    python -m bench.layout --where attention  # where its wires cross, and which

The diagrams are those `make demo` draws (`ncd.gallery_job`): for every `gallery/*.ncd`, each
definition of the file itself, and, where it calls another definition, the same drawn with
the calls expanded (`RenderOptions(expand_calls=True)`). For each diagram (`Diagram`, the
geometry the SVG is drawn from):

- width and height in px (SVG user units) and the aspect ratio, the longer side over the
  shorter (1.0 is square; `3.0` is 3:1 either way);
- crossings: points where two different wires (axis, datatype or parameter wires; not the
  dashed separators) cross, their ends excepted (wires that meet at a dot, a fork, a cup or a
  port touch there and do not cross), and a wire passing through a dot drawn on another
  (a tie) excepted; two wires crossing twice count twice;
- bends: the lane changes of wires, each S-curve (a cubic that ends at another height) and
  each corner of a polyline counted once;
- wire length: the total length in px of every wire (axis, datatype, parameter);
- smallest label: the smallest font size among the diagram's labels (wire labels, glyph
  captions, titles) in points once the diagram is scaled to 170 mm wide (a paper's text
  width): `size_px * 170 mm / width_px`, in points. Subscripts print at 0.7 of that.

"Before" is measured on the same gallery files with the whole toolchain of git revision
`--before` (default `BEFORE`, the renderer as it was when the issue "Diagrams that fit the
page" was started): its tree is exported to a temporary folder and measured in a separate
process. A file that revision cannot load has no before figures.

Not a test: it asserts nothing; it prints the table and writes `bench/LAYOUT.md`.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tarfile
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from io import BytesIO
from itertools import pairwise
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GALLERY = ROOT / "gallery"
OUTPUT = ROOT / "bench" / "LAYOUT.md"
BEFORE = "e20c9e7"
"""The revision measured as "before": `main` when this issue's work started."""
PAGE_MM = 170.0
PT_PER_MM = 72.0 / 25.4
GOAL_PT = 6.0
GOAL_ASPECT = 3.0
WIRE_ROLES = ("axis", "dtype", "param")
CELL = 48.0
DOT_TOLERANCE = 3.0
"""A crossing this close (px) to a dot is a tie: the wires meet there."""
END_TOLERANCE = 1.0
"""A crossing this close (px) to an end of either wire is where they meet, not a crossing."""

Figures = dict[str, Any]


# ---------------------------------------------------------------------------------------
# The diagrams


def gallery_diagrams(gallery: Path) -> Iterator[tuple[str, Any]]:
    """(name, Diagram) for every diagram `make demo` draws, named like its SVG file
    (`transformer.expanded`, `gru.gru_cell`); a file that does not load yields
    (`file.ncd`, None)."""
    from ncd.renderers import RenderOptions, diagram

    from ncd import ir
    from ncd.api import load

    for source in sorted(gallery.glob("*.ncd")):
        try:
            program = load(source)
        except Exception:  # NcdError, or an older toolchain that cannot read a newer file
            yield source.name, None
            continue
        main_name = program.main.name
        local = [d for d in program.definitions
                 if d.ir.span is None or Path(d.ir.span.file).name == source.name]
        for definition in local:
            name = source.stem + ("" if definition.name == main_name else f".{definition.name}")
            yield name, diagram(program.ir, definition.name)
            calls = any(isinstance(t, ir.Broadcasted) and isinstance(t.op, ir.CallOp)
                        for t in ir.walk(definition.ir.body))
            if calls:
                yield f"{name}.expanded", diagram(program.ir, definition.name,
                                                  RenderOptions(expand_calls=True))


# ---------------------------------------------------------------------------------------
# The measures


Point = tuple[float, float]
EPSILON = 1e-9


def _meet(a: Point, b: Point, c: Point, d: Point) -> tuple[float, float] | None:
    """The parameters (t on ab, u on cd) where segments ab and cd meet, ends included; None
    when they do not meet or are parallel (a shared run is not a crossing point)."""
    rx, ry = b[0] - a[0], b[1] - a[1]
    sx, sy = d[0] - c[0], d[1] - c[1]
    denominator = rx * sy - ry * sx
    if abs(denominator) < EPSILON:
        return None
    qx, qy = c[0] - a[0], c[1] - a[1]
    t = (qx * sy - qy * sx) / denominator
    u = (qx * ry - qy * rx) / denominator
    if -EPSILON <= t <= 1 + EPSILON and -EPSILON <= u <= 1 + EPSILON:
        return t, u
    return None


def _inside(t: float) -> bool:
    return EPSILON < t < 1 - EPSILON


def _neighbours(points: list[Point], k: int, t: float) -> tuple[Point, Point] | None:
    """The points a wire comes from and goes to around where it is met: the ends of its
    segment k when met inside it, the vertices either side when met at a vertex; None at an
    end of the wire (wires meet there)."""
    if _inside(t):
        return points[k], points[k + 1]
    vertex = k if t <= EPSILON else k + 1
    if vertex == 0 or vertex == len(points) - 1:
        return None
    return points[vertex - 1], points[vertex + 1]


def _separates(at: Point, first: tuple[Point, Point], second: tuple[Point, Point]) -> bool:
    """Whether the wire through `at` along `second` passes from one side of the wire along
    `first` to the other (a crossing), rather than touching it and turning back. The two
    directions of `first` cut the turn around `at` in two; `second` crosses when its two
    directions lie in different parts. A direction along `first` (a shared run) is no
    crossing here."""
    def angle(point: Point) -> float:
        return math.atan2(point[1] - at[1], point[0] - at[0]) % math.tau

    start, end = angle(first[0]), angle(first[1])
    span = (end - start) % math.tau

    def side(point: Point) -> int | None:
        turn = (angle(point) - start) % math.tau
        if min(turn, math.tau - turn) < 1e-7 or abs(turn - span) < 1e-7:
            return None
        return 0 if turn < span else 1

    sides = (side(second[0]), side(second[1]))
    return None not in sides and sides[0] != sides[1]


def crossings(paths: list[Any], dots: Sequence[tuple[float, float]] = ()) -> int:
    """Crossings between different wires (see the module docstring); where a wire passes
    through a dot on another (a tie, as a loop spanning a state is tied to each of its
    wires), they meet rather than cross."""
    return len(crossing_points(paths, dots))


def crossing_points(paths: list[Any], dots: Sequence[tuple[float, float]] = ()
                    ) -> list[tuple[float, float, int, int]]:
    """Where the crossings `crossings` counts are: (x, y, wire, other wire), left to right.

    Two wires cross where their polylines pass through each other: inside a segment of each,
    or where one or both pass through a vertex (two curves swapped symmetrically share their
    middle sample), in which case the turn of each wire around the point decides whether
    the other passes to its other side or only touches it."""
    dot_grid: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    for x, y in dots:
        dot_grid[(int(x // CELL), int(y // CELL))].append((x, y))
    polylines: list[list[Point]] = []
    segments: list[tuple[int, int]] = []  # (path, index of the segment's first point)
    for index, path in enumerate(paths):
        drawn = path.polyline()
        points = [point for point, following in zip(drawn, [*drawn[1:], None], strict=True)
                  if point != following]
        polylines.append(points)
        segments.extend((index, k) for k in range(len(points) - 1))
    grid: dict[tuple[int, int], list[int]] = defaultdict(list)
    for s, (w, k) in enumerate(segments):
        p, q = polylines[w][k], polylines[w][k + 1]
        for cx in range(int(min(p[0], q[0]) // CELL), int(max(p[0], q[0]) // CELL) + 1):
            for cy in range(int(min(p[1], q[1]) // CELL), int(max(p[1], q[1]) // CELL) + 1):
                grid[(cx, cy)].append(s)
    found: dict[tuple[int, int, int, int], tuple[float, float, int, int]] = {}
    for cell in grid.values():
        for i_pos, i in enumerate(cell):
            wi, ki = segments[i]
            a, b = polylines[wi][ki], polylines[wi][ki + 1]
            for j in cell[i_pos + 1:]:
                wj, kj = segments[j]
                if paths[wi].wire == paths[wj].wire:
                    continue
                c, d = polylines[wj][kj], polylines[wj][kj + 1]
                met = _meet(a, b, c, d)
                if met is None:
                    continue
                t, u = met
                point = (a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]))
                if not (_inside(t) and _inside(u)):
                    around_i = _neighbours(polylines[wi], ki, t)
                    around_j = _neighbours(polylines[wj], kj, u)
                    if around_i is None or around_j is None \
                            or not _separates(point, around_i, around_j):
                        continue
                ends = (polylines[wi][0], polylines[wi][-1], polylines[wj][0],
                        polylines[wj][-1])
                if any(math.dist(point, e) <= END_TOLERANCE for e in ends):
                    continue
                key = (int(point[0] // CELL), int(point[1] // CELL))
                if any(math.dist(point, dot) <= DOT_TOLERANCE
                       for dx in (-1, 0, 1) for dy in (-1, 0, 1)
                       for dot in dot_grid.get((key[0] + dx, key[1] + dy), ())):
                    continue
                pair = (min(wi, wj), max(wi, wj))
                found.setdefault((*pair, round(point[0] / 2), round(point[1] / 2)),
                                 (point[0], point[1], paths[pair[0]].wire,
                                  paths[pair[1]].wire))
    return sorted(found.values())


def bends(paths: list[Any]) -> int:
    count = 0
    for path in paths:
        x, y = path.start
        previous: tuple[float, float] | None = None
        for segment in path.segments:
            nx, ny = segment[-2], segment[-1]
            if len(segment) == 6:
                if abs(ny - y) > 0.05:
                    count += 1
                previous = (segment[4] - segment[2], segment[5] - segment[3])
            else:
                direction = (nx - x, ny - y)
                if previous is not None and math.hypot(*direction) > 1e-6 \
                        and math.hypot(*previous) > 1e-6:
                    angle = abs(math.atan2(previous[0] * direction[1] - previous[1] * direction[0],
                                           previous[0] * direction[0] + previous[1] * direction[1]))
                    if angle > math.radians(5):
                        count += 1
                previous = direction
            x, y = nx, ny
    return count


def wire_length(paths: list[Any]) -> float:
    return sum(math.dist(p, q) for path in paths for p, q in pairwise(path.polyline(24)))


def smallest_label_pt(diagram: Any) -> float | None:
    from ncd.renderers.geometry import Text

    sizes = [item.size for item in diagram.items if isinstance(item, Text)]
    if not sizes or diagram.width <= 0:
        return None
    return min(sizes) * PAGE_MM / diagram.width * PT_PER_MM


def measure(diagram: Any) -> Figures:
    from ncd.renderers.geometry import Circle
    from ncd.renderers.geometry import Path as WirePath

    paths = [item for item in diagram.items if isinstance(item, WirePath)
             and item.wire is not None and item.role in WIRE_ROLES]
    dots = [(item.cx, item.cy) for item in diagram.items
            if isinstance(item, Circle) and item.r <= DOT_TOLERANCE and item.fill is not None]
    width, height = float(diagram.width), float(diagram.height)
    return {
        "width": round(width, 1),
        "height": round(height, 1),
        "aspect": round(max(width, height) / min(width, height), 2),
        "crossings": crossings(paths, dots),
        "bends": bends(paths),
        "length": round(wire_length(paths)),
        "label_pt": (round(pt, 2) if (pt := smallest_label_pt(diagram)) is not None
                     else None),
        "problems": len(diagram.validate()),
    }


def print_crossings(gallery: Path, names: Sequence[str]) -> int:
    """Each crossing of the named diagrams: where, and the names of the two wires."""
    from ncd.renderers.geometry import Circle, Text
    from ncd.renderers.geometry import Path as WirePath

    for name, diagram in gallery_diagrams(gallery):
        if name not in names or diagram is None:
            continue
        paths = [item for item in diagram.items if isinstance(item, WirePath)
                 and item.wire is not None and item.role in WIRE_ROLES]
        dots = [(item.cx, item.cy) for item in diagram.items
                if isinstance(item, Circle) and item.r <= DOT_TOLERANCE and item.fill is not None]
        named: dict[int, str] = {}
        for item in diagram.items:
            if isinstance(item, Text) and item.wire is not None:
                named.setdefault(item.wire, "".join(run.text for run in item.label.runs))
        points = crossing_points(paths, dots)
        print(f"{name}: {len(points)} crossings")
        for x, y, a, b in points:
            print(f"  ({x:7.1f}, {y:7.1f})  {named.get(a, '?')} (wire {a}) x "
                  f"{named.get(b, '?')} (wire {b})")
    return 0


def measure_gallery(gallery: Path) -> dict[str, Figures | None]:
    return {name: (measure(d) if d is not None else None)
            for name, d in gallery_diagrams(gallery)}


# ---------------------------------------------------------------------------------------
# Before: another revision's toolchain, in its own process


def _exported(revision: str, folder: Path) -> None:
    """The tree of `revision` (its `ncd`, `renderers` and `compilers`) written to `folder`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", revision,
                              "ncd", "renderers", "compilers"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")


def measure_before(revision: str, gallery: Path) -> dict[str, Figures | None]:
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        tree.mkdir()
        _exported(revision, tree)
        out = Path(tmp) / "before.json"
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--tree", str(tree),
                        "--gallery", str(gallery), "--no-before", "--json", str(out),
                        "--quiet"], check=True)
        figures: dict[str, Figures | None] = json.loads(out.read_text())
        return figures


def _use_tree(tree: Path) -> None:
    """Import `ncd` (and `ncd.renderers`, `ncd.compilers`, laid out beside it as in the
    repository) from `tree` instead of the installed project."""
    sys.path.insert(0, str(tree))
    for name in [m for m in sys.modules if m == "ncd" or m.startswith("ncd.")]:
        del sys.modules[name]
    import ncd

    ncd.__path__.append(str(tree))  # `ncd.renderers` is `tree/renderers`


# ---------------------------------------------------------------------------------------
# The report


COLUMNS = (("width", "width px"), ("height", "height px"), ("aspect", "aspect"),
           ("crossings", "crossings"), ("bends", "bends"), ("length", "wire length px"),
           ("label_pt", "smallest label pt"))


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}" if value < 100 else f"{value:,.1f}"
    return f"{int(value):,}"


def _pair(key: str, before: Figures | None, after: Figures | None) -> str:
    a = _cell(before.get(key) if before else None)
    b = _cell(after.get(key) if after else None)
    return b if before is None else f"{a} → {b}"


def report(after: dict[str, Figures | None], before: dict[str, Figures | None] | None,
           revision: str | None, head: str) -> str:
    lines = [
        "# Layout quality of the gallery",
        "",
        "Written by `python -m bench.layout` (see its docstring for what each figure means and "
        "how it is measured). Every diagram `make demo` draws, default and expanded; "
        + (f"each cell is *before → after*: before is the renderer of `{revision}`, after the "
           f"working tree (`{head}`), both on today's gallery files."
           if before is not None else f"the working tree (`{head}`)."),
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- smallest label: points at {PAGE_MM:g} mm wide; goal {GOAL_PT:g} pt or more. "
        f"Aspect: the longer side over the shorter; goal for the expanded transformer and "
        f"LeNet-5: {GOAL_ASPECT:g} or less.",
        "",
        "| diagram | " + " | ".join(title for _, title in COLUMNS) + " | validate() |",
        "|---|" + "---:|" * len(COLUMNS) + "---:|",
    ]
    names = [n for n in after if after[n] is not None]
    for name in names:
        a = after.get(name)
        b = before.get(name) if before is not None else None
        cells = [_pair(key, b, a) if before is not None else _cell(a.get(key) if a else None)
                 for key, _ in COLUMNS]
        problems = _pair("problems", b, a) if before is not None else \
            _cell(a.get("problems") if a else None)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {problems} |")
    unreadable = sorted({n for n, f in after.items() if f is None}
                        | {n for n, f in (before or {}).items() if f is None})
    if unreadable:
        lines.append("")
        lines.append("Not measured where a revision cannot load the file (a newer language "
                     "construct, or a file it has no before for): "
                     + ", ".join(f"`{n}`" for n in unreadable) + "; its diagrams have no "
                     "before figures above.")
    lines.append("")
    lines.append("## Totals and goals")
    lines.append("")

    def total(figures: dict[str, Figures | None], key: str, only: set[str]) -> float:
        return sum(f[key] for n, f in figures.items() if f is not None and n in only)

    both = {n for n in after if after[n] is not None
            and (before is None or before.get(n) is not None)}
    for key, title in (("crossings", "crossings"), ("bends", "bends"),
                       ("length", "wire length px")):
        now = total(after, key, both)
        if before is not None:
            then = total(before, key, both)
            change = f" ({(now - then) / then:+.0%})" if then else ""
            lines.append(f"- total {title} over the {len(both)} diagrams both revisions draw: "
                         f"{_cell(then)} → {_cell(now)}{change}")
        else:
            lines.append(f"- total {title}: {_cell(now)}")
    small = sorted(n for n, f in after.items()
                   if f is not None and (f["label_pt"] or 0) < GOAL_PT)
    lines.append(f"- diagrams whose smallest label prints under {GOAL_PT:g} pt at "
                 f"{PAGE_MM:g} mm: {len(small)} of {len(after)}"
                 + (f" ({', '.join(small)})" if small else ""))
    for name in ("transformer.expanded", "lenet5"):
        f = after.get(name)
        if f is not None:
            lines.append(f"- {name}: aspect {f['aspect']:g}, smallest label "
                         f"{_cell(f['label_pt'])} pt")
    failing = sorted(n for n, f in after.items() if f is not None and f["problems"])
    lines.append("- diagrams `validate()` finds problems in: "
                 + (", ".join(failing) if failing else "none"))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=BEFORE, metavar="REV",
                        help=f"the revision measured as before (default {BEFORE})")
    parser.add_argument("--no-before", action="store_true", help="measure the working tree only")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--output", type=Path, default=OUTPUT, metavar="FILE",
                        help="the Markdown report (default bench/LAYOUT.md)")
    parser.add_argument("--where", metavar="DIAGRAM", action="append", default=[],
                        help="print where the wires of DIAGRAM (e.g. attention, "
                             "unet_level.expanded) cross, and write nothing else")
    parser.add_argument("--gallery", type=Path, default=GALLERY, help=argparse.SUPPRESS)
    parser.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tree is not None:
        _use_tree(args.tree)
    if args.where:
        return print_crossings(args.gallery, args.where)
    after = measure_gallery(args.gallery)
    if args.json is not None:
        args.json.write_text(json.dumps(after, indent=1))
    if args.quiet:
        return 0
    before = None if args.no_before else measure_before(args.before, args.gallery)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "renderers", "ncd"],
                           capture_output=True, text=True).stdout.strip()
    text = report(after, before, None if args.no_before else args.before,
                  head + (" with changes" if dirty else ""))
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
