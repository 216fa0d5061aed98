"""The toolchain on large programs: check, compile and render times, memory, and start-up.

    python -m bench.toolchain                 # sizes 1,000 to 10,000; writes bench/TOOLCHAIN.md
    python bench/toolchain.py --quick         # sizes 1,000 and 2,000, one run, a minute or so
    python bench/toolchain.py --json out.json --sizes 1000 3000 --shapes chain nested
    python -m bench.toolchain --sizes 5000 10000 --runs 1 --no-render --no-memory  # no renders

Synthetic programs of N statements (as the checker counts them: blocks too, returns too) in
four shapes (`SHAPES`): one long chain of rebindings, blocks nested three deep, many small
definitions called by a main one, and a deep chain of definitions each calling the previous
one. For each program and stage (check: parse and
elaborate; compile: PyTorch source; render: SVG, and collapsed with `--collapse 1` where the
program has blocks) it reports the medians of process CPU time and wall time over a few runs,
interleaved (run 1 of every case, then run 2, ...), and, from a separate process per program,
the peak of memory allocated by Python during each stage (tracemalloc) and the process's
peak resident memory. The doubling ratio is time(2N) / time(N) for every N in the sizes whose
double is too: a linear toolchain keeps it near 2. Start-up: `import ncd` and a whole
`ncd check gallery/attention.ncd` process (medians of several). Also the 96-layer transformer
(the gallery's layer written out 96 times as separate blocks) rendered collapsed and expanded,
with the layout rules checked (`Diagram.validate`).

Not a test: it asserts nothing, prints a table and writes `bench/TOOLCHAIN.md` (with the
machine, Python and package versions and the date) and, with `--json FILE`, the raw figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GALLERY_FILE = ROOT / "gallery" / "attention.ncd"
# A definition has at most 10,000 statements (E103, `ncd.statements.MAX_STATEMENTS`), so the
# doubling ratio of the largest size is taken from 5,000 to 10,000.
SIZES = (1_000, 3_000, 5_000, 10_000)
QUICK_SIZES = (1_000, 2_000)
MEMORY_LIMIT = 10_000  # memory is measured for sizes up to this (tracemalloc is slow)
TRANSFORMER_LAYERS = 96

# What the issue asks of the toolchain, reported (never asserted): seconds at 10,000 statements.
TARGETS = {"check": 2.0, "compile": 2.0, "render collapsed": 5.0}
DOUBLING_TARGET = 2.2
IMPORT_TARGET = 0.15
CHECK_PROCESS_TARGET = 0.35


# ---------------------------------------------------------------------------------------
# synthetic programs
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Synthetic:
    shape: str
    statements: int  # statements in definition bodies (returns included)
    text: str
    main: str
    has_blocks: bool


HEADER = '"""A synthetic program of the toolchain benchmark."""\n\naxis b, m = 16\n\n'
STEPS = (  # one statement each, cycled through; `{i}` numbers the parameters
    "X = gelu(X)",
    "X = X + relu(X)",
    "X = linear[m -> m, bias](X, W{i}, c{i})",
    "X = layernorm[m](X, g{i}, h{i})",
)


def step(index: int) -> str:
    return STEPS[index % len(STEPS)].format(i=index)


def chain(n: int) -> Synthetic:
    """One definition: n - 1 rebindings of X, then `return X`."""
    body = "".join(f"    {step(i)}\n" for i in range(n - 1))
    text = HEADER + f"def chain(X: R[b, m]) -> R[b, m] {{\n{body}    return X\n}}\n"
    return Synthetic("chain", n, text, "chain", False)


def nested(n: int) -> Synthetic:
    """One definition: blocks three deep, each outer block holding 4 blocks of 5 blocks of 5
    statements (125 statements, the blocks counted, as the checker counts them); what does
    not fill an outer block follows it unblocked."""
    lines: list[str] = []
    index = 0
    budget = n - 1  # the return is the last statement
    outer = 0
    while budget >= 125:
        outer += 1
        budget -= 125
        lines.append(f'    block "Stage {outer}" {{')
        for middle in range(1, 5):
            lines.append(f'        block "Layer {outer}.{middle}" {{')
            for inner in range(1, 6):
                lines.append(f'            block "Part {outer}.{middle}.{inner}" {{')
                for _ in range(5):
                    lines.append(f"                {step(index)}")
                    index += 1
                lines.append("            }")
            lines.append("        }")
        lines.append("    }")
    for _ in range(budget):
        lines.append(f"    {step(index)}")
        index += 1
    body = "\n".join(lines)
    text = HEADER + f"def nested(X: R[b, m]) -> R[b, m] {{\n{body}\n    return X\n}}\n"
    return Synthetic("nested", n, text, "nested", True)


def definitions(n: int) -> Synthetic:
    """n / 5 definitions of 4 statements, and a main one calling each of them once."""
    count = max(1, n // 5)
    parts: list[str] = []
    for d in range(count):
        body = "".join(f"    {step(4 * d + i)}\n" for i in range(3))
        parts.append(f"def part{d}(X: R[b, m]) -> R[b, m] {{\n{body}    return X\n}}\n")
    calls = "".join(f"    X = part{d}(X)\n" for d in range(count - 1))
    parts.append(f"def main(X: R[b, m]) -> R[b, m] {{\n{calls}    return part{count - 1}(X)\n}}\n")
    return Synthetic("definitions", 5 * count, HEADER + "\n".join(parts), "main", False)


def calls(n: int) -> Synthetic:
    """n / 2 definitions of 2 statements, each calling the one before it."""
    count = max(1, n // 2)
    parts = ["def call0(X: R[b, m]) -> R[b, m] {\n    H = gelu(X)\n    return H + X\n}\n"]
    for d in range(1, count):
        parts.append(f"def call{d}(X: R[b, m]) -> R[b, m] {{\n    H = call{d - 1}(X)\n"
                     "    return H + X\n}\n")
    return Synthetic("calls", 2 * count, HEADER + "\n".join(parts), f"call{count - 1}", False)


SHAPES: dict[str, Callable[[int], Synthetic]] = {
    "chain": chain, "nested": nested, "definitions": definitions, "calls": calls,
}


# ---------------------------------------------------------------------------------------
# the stages
# ---------------------------------------------------------------------------------------


# `--no-render` runs only these (the renders of the largest programs take minutes)
UNRENDERED = ("check", "compile")


def stages(program: Synthetic, render: bool = True) -> tuple[str, ...]:
    if not render:
        return UNRENDERED
    names = (*UNRENDERED, "render")
    return (*names, "render collapsed") if program.has_blocks else names


class Loaded:
    """A program checked once; the later stages start from it."""

    def __init__(self, synthetic: Synthetic) -> None:
        self.synthetic = synthetic
        self.program: Any = None

    def run(self, stage: str) -> None:
        import ncd

        if stage == "check":
            self.program = ncd.load(self.synthetic.text, name=f"{self.synthetic.shape}.ncd")
        elif stage == "compile":
            self.program.compile(self.synthetic.main)
        elif stage == "render":
            self.program.render(self.synthetic.main)
        elif stage == "render collapsed":
            self.program.render(self.synthetic.main, collapse_depth=1)
        else:
            raise ValueError(stage)


def warm_up() -> None:
    """Every stage once on a small program: the lazy imports (renderers, fonts, compiler)
    are not charged to the first case."""
    loaded = Loaded(nested(40))
    for stage in stages(loaded.synthetic):
        loaded.run(stage)


def timed(loaded: Loaded, stage: str) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    loaded.run(stage)
    return time.process_time() - cpu, time.perf_counter() - wall


@dataclass
class Row:
    shape: str
    statements: int
    stage: str
    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    traced_mib: float | None = None  # peak Python allocations during the stage
    rss_mib: float | None = None  # peak resident memory of the process after all stages

    @property
    def key(self) -> tuple[str, int, str]:
        return self.shape, self.statements, self.stage

    def summary(self) -> dict[str, Any]:
        return {"shape": self.shape, "statements": self.statements, "stage": self.stage,
                "cpu_s": statistics.median(self.cpu), "wall_s": statistics.median(self.wall),
                "cpu_runs": self.cpu, "wall_runs": self.wall,
                "traced_peak_mib": self.traced_mib, "max_rss_mib": self.rss_mib}


def time_programs(programs: list[Synthetic], runs: int,
                  render: bool = True) -> dict[tuple[str, int, str], Row]:
    rows: dict[tuple[str, int, str], Row] = {}
    warm_up()
    for run in range(runs):
        for synthetic in programs:
            loaded = Loaded(synthetic)
            for stage in stages(synthetic, render):
                cpu, wall = timed(loaded, stage)
                row = rows.setdefault((synthetic.shape, synthetic.statements, stage),
                                      Row(synthetic.shape, synthetic.statements, stage))
                row.cpu.append(cpu)
                row.wall.append(wall)
                print(f"  run {run + 1}/{runs} {synthetic.shape:11s} {synthetic.statements:6d}"
                      f" {stage:16s} {cpu:8.3f} s cpu {wall:8.3f} s wall", flush=True)
    return rows


def memory_of(shape: str, n: int, render: bool = True) -> dict[str, float]:
    """Run in a fresh process (`--memory SHAPE N`): the peak of Python's allocations during
    each stage, and the process's peak resident memory at the end, in MiB."""
    synthetic = SHAPES[shape](n)
    loaded = Loaded(synthetic)
    figures: dict[str, float] = {}
    warm_up()
    tracemalloc.start()
    for stage in stages(synthetic, render):
        tracemalloc.reset_peak()
        loaded.run(stage)
        figures[stage] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    figures["max_rss"] = peak_resident_mib()
    return figures


def peak_resident_mib() -> float:
    """This process's peak resident memory. On Linux from /proc (`VmHWM`, which starts
    afresh at exec): `ru_maxrss` keeps the parent's peak across fork and exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    except OSError:
        pass
    scale = 2**20 if sys.platform == "darwin" else 2**10  # ru_maxrss: bytes there, KiB here
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def measure_memory(rows: dict[tuple[str, int, str], Row], programs: list[Synthetic],
                   render: bool = True) -> None:
    for synthetic in programs:
        if synthetic.statements > MEMORY_LIMIT:
            continue
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--memory",
                               synthetic.shape, str(synthetic.statements),
                               *([] if render else ["--no-render"])],
                              capture_output=True, text=True, check=True, cwd=ROOT)
        figures = json.loads(done.stdout)
        for stage in stages(synthetic, render):
            row = rows[(synthetic.shape, synthetic.statements, stage)]
            row.traced_mib = figures[stage]
            row.rss_mib = figures["max_rss"]
        print(f"  memory {synthetic.shape:11s} {synthetic.statements:6d} "
              f"max rss {figures['max_rss']:.0f} MiB", flush=True)


# ---------------------------------------------------------------------------------------
# start-up and the 96-layer transformer
# ---------------------------------------------------------------------------------------

IMPORT_PROBE = ("import time\ncpu, wall = time.process_time(), time.perf_counter()\n"
                "import ncd\nprint(time.process_time() - cpu, time.perf_counter() - wall)\n")


def ncd_command() -> list[str]:
    script = Path(sys.executable).parent / "ncd"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ncd"]


def startup(runs: int) -> dict[str, Any]:
    """Medians over `runs` fresh processes, after one run that is not counted. Bytecode
    caching is on (as after an install) even where PYTHONDONTWRITEBYTECODE is set here."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    imports: list[tuple[float, float]] = []
    checks: list[float] = []
    check_cpu: list[float] = []
    for run in range(runs + 1):
        done = subprocess.run([sys.executable, "-c", IMPORT_PROBE], capture_output=True,
                              text=True, check=True, cwd=ROOT, env=env)
        cpu, wall = map(float, done.stdout.split())
        start = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([*ncd_command(), "check", str(GALLERY_FILE)], capture_output=True,
                       check=True, cwd=ROOT, env=env)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if run:
            imports.append((cpu, wall))
            checks.append(time.perf_counter() - start)
            check_cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return {"import_cpu_s": statistics.median(c for c, _ in imports),
            "import_wall_s": statistics.median(w for _, w in imports),
            "check_process_wall_s": statistics.median(checks),
            "check_process_cpu_s": statistics.median(check_cpu),
            "import_wall_runs": [w for _, w in imports], "check_process_runs": checks}


def deep_transformer(layers: int = TRANSFORMER_LAYERS) -> Any:
    """The gallery's transformer with its layer block written out `layers` times."""
    import ncd
    from ncd import ir

    program = ncd.load(str(ROOT / "gallery" / "transformer.ncd")).ir
    model = program.definition("transformer")
    body = model.body
    assert isinstance(body, ir.Composed)
    layer, *rest = body.terms
    assert isinstance(layer, ir.Block)
    blocks = [layer.model_copy(update={"title": f"Layer {i + 1}", "repeat": 1})
              for i in range(layers)]
    deep = model.model_copy(update={
        "name": "deep_transformer",
        "body": ir.Composed(terms=(*blocks, *rest), dom=body.dom, cod=body.cod),
    })
    return program.model_copy(update={"definitions": (*program.definitions, deep)})


def transformer_renders(runs: int) -> list[dict[str, Any]]:
    from ncd.renderers import RenderOptions, diagram, render_svg

    program = deep_transformer()
    results = []
    for label, options in [("collapsed", RenderOptions(collapse_depth=0)),
                           ("expanded", RenderOptions(expand_calls=True))]:
        cpu: list[float] = []
        wall: list[float] = []
        svg = ""
        for _ in range(runs):
            start_cpu, start = time.process_time(), time.perf_counter()
            svg = render_svg(program, "deep_transformer", options)
            cpu.append(time.process_time() - start_cpu)
            wall.append(time.perf_counter() - start)
        geometry = diagram(program, "deep_transformer", options)
        results.append({"render": label, "cpu_s": statistics.median(cpu),
                        "wall_s": statistics.median(wall), "svg_mb": len(svg) / 1e6,
                        "boxes": len(geometry.boxes), "problems": len(geometry.validate())})
        print(f"  transformer x{TRANSFORMER_LAYERS} {label:9s} {results[-1]['wall_s']:.2f} s",
              flush=True)
    return results


# ---------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------


def doubling(rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    by_key = {(r["shape"], r["statements"], r["stage"]): r for r in rows}
    for (shape, n, stage), row in by_key.items():
        double = by_key.get((shape, 2 * n, stage))
        if double is not None and row["cpu_s"] > 0:
            yield {"shape": shape, "statements": n, "stage": stage,
                   "cpu_ratio": double["cpu_s"] / row["cpu_s"],
                   "wall_ratio": double["wall_s"] / row["wall_s"]}


def machine() -> dict[str, str]:
    packages = {}
    for name in ("ncd", "pydantic", "pydantic-core", "lark", "ziafont"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "not installed"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = "load average {:.1f}, {:.1f}, {:.1f} (1, 5, 15 min)".format(*os.getloadavg())
    except OSError:
        load = "unknown"
    return {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "load": load,
            "machine": f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} "
                       f"{platform.release()}",
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "packages": ", ".join(f"{k} {v}" for k, v in packages.items())}


def mark(value: float, target: float) -> str:
    return "yes" if value < target else "**no**"


def markdown(results: dict[str, Any]) -> str:
    info = results["machine"]
    lines = [
        "# The toolchain on large programs",
        "",
        "Written by `python -m bench.toolchain` (see its docstring for what is measured and "
        "how). Times are medians of process CPU time and wall time over "
        f"{results['runs']} interleaved run(s); memory is the peak of Python's allocations "
        "during the stage (tracemalloc) and the peak resident memory of a process that ran "
        "every stage of that program.",
        "",
        f"- date: {info['date']}",
        f"- machine: {info['machine']}",
        f"- Python: {info['python']}",
        f"- packages: {info['packages']}",
        f"- load: {info['load']}",
        "",
        "## Start-up",
        "",
        "| what | CPU s | wall s | target (CPU) |",
        "|---|---:|---:|---|",
    ]
    start = results["startup"]
    lines.append(f"| `import ncd` (in a fresh process) | {start['import_cpu_s']:.3f} | "
                 f"{start['import_wall_s']:.3f} | < {IMPORT_TARGET} s: "
                 f"{mark(start['import_cpu_s'], IMPORT_TARGET)} |")
    lines.append(f"| `ncd check gallery/attention.ncd` (whole process) | "
                 f"{start['check_process_cpu_s']:.3f} | {start['check_process_wall_s']:.3f} | "
                 f"< {CHECK_PROCESS_TARGET} s: "
                 f"{mark(start['check_process_cpu_s'], CHECK_PROCESS_TARGET)} |")
    lines += ["", "## Synthetic programs", "",
              "| shape | statements | stage | CPU s | wall s | peak traced MiB | max RSS MiB |",
              "|---|---:|---|---:|---:|---:|---:|"]
    for row in results["rows"]:
        traced = "" if row["traced_peak_mib"] is None else f"{row['traced_peak_mib']:.1f}"
        rss = "" if row["max_rss_mib"] is None else f"{row['max_rss_mib']:.0f}"
        lines.append(f"| {row['shape']} | {row['statements']:,} | {row['stage']} | "
                     f"{row['cpu_s']:.3f} | {row['wall_s']:.3f} | {traced} | {rss} |")
    largest = [r for r in results["rows"] if r["statements"] == 10_000]
    if largest:
        lines += ["", "At 10,000 statements, against the targets (CPU seconds; `render "
                  "collapsed` stands for `render` where a program has no blocks):", "",
                  "| shape | stage | CPU s | target | met |", "|---|---|---:|---:|---|"]
        for row in largest:
            stage = row["stage"]
            has_collapsed = any(r["shape"] == row["shape"] and r["stage"] == "render collapsed"
                                for r in largest)
            target_stage = "render collapsed" if stage == "render" and not has_collapsed \
                else stage
            if target_stage in TARGETS:
                target = TARGETS[target_stage]
                lines.append(f"| {row['shape']} | {stage} | {row['cpu_s']:.3f} | < {target} | "
                             f"{mark(row['cpu_s'], target)} |")
    lines += ["", "## Doubling ratios", "",
              f"time(2N) / time(N); a linear stage stays near 2 (target at most "
              f"{DOUBLING_TARGET}).", "",
              "| shape | N | stage | CPU ratio | wall ratio | met (CPU) |",
              "|---|---:|---|---:|---:|---|"]
    for ratio in results["doubling"]:
        met = "yes" if ratio["cpu_ratio"] <= DOUBLING_TARGET else "**no**"
        lines.append(f"| {ratio['shape']} | {ratio['statements']:,} | {ratio['stage']} | "
                     f"{ratio['cpu_ratio']:.2f} | {ratio['wall_ratio']:.2f} | {met} |")
    if results.get("transformer"):
        lines += ["", f"## The {TRANSFORMER_LAYERS}-layer transformer", "",
                  "The gallery's transformer layer written out as separate blocks, rendered "
                  "with `collapse_depth=0` and with `expand_calls`; problems are broken layout "
                  "rules (`Diagram.validate`).", "",
                  "| render | CPU s | wall s | SVG MB | boxes | problems |",
                  "|---|---:|---:|---:|---:|---:|"]
        for entry in results["transformer"]:
            lines.append(f"| {entry['render']} | {entry['cpu_s']:.2f} | {entry['wall_s']:.2f} |"
                         f" {entry['svg_mb']:.2f} | {entry['boxes']} | {entry['problems']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="sizes 1,000 and 2,000, one run, three start-up runs")
    parser.add_argument("--sizes", type=int, nargs="+", help="statement counts to run")
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), help="shapes to run")
    parser.add_argument("--runs", type=int, help="interleaved runs of each case (default 3)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the raw figures")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "TOOLCHAIN.md",
                        help="the Markdown report (default bench/TOOLCHAIN.md)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory processes")
    parser.add_argument("--no-transformer", action="store_true",
                        help=f"skip the {TRANSFORMER_LAYERS}-layer transformer renders")
    parser.add_argument("--no-render", action="store_true",
                        help="check and compile only (no render stages)")
    parser.add_argument("--memory", nargs=2, metavar=("SHAPE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory:
        print(json.dumps(memory_of(args.memory[0], int(args.memory[1]), not args.no_render)))
        return 0
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    runs = args.runs or (1 if args.quick else 3)
    shapes = args.shapes or list(SHAPES)
    programs = [SHAPES[shape](n) for n in sorted(sizes) for shape in shapes]
    print("start-up", flush=True)
    results: dict[str, Any] = {"machine": machine(), "runs": runs,
                               "startup": startup(3 if args.quick else 9)}
    print(f"  import ncd {results['startup']['import_cpu_s']:.3f} s, ncd check "
          f"{results['startup']['check_process_cpu_s']:.3f} s (CPU)", flush=True)
    print("synthetic programs", flush=True)
    rows = time_programs(programs, runs, not args.no_render)
    if not args.no_memory:
        measure_memory(rows, programs, not args.no_render)
    results["rows"] = [row.summary() for row in rows.values()]
    results["rows"].sort(key=lambda r: (list(SHAPES).index(r["shape"]), r["statements"]))
    results["doubling"] = list(doubling(results["rows"]))
    if not args.no_transformer:
        results["transformer"] = transformer_renders(1 if args.quick else runs)
    report = markdown(results)
    args.output.write_text(report, encoding="utf-8")
    print(report)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
