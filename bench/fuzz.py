"""Long fuzz runs: generated and corrupted `.ncd` programs through check, render and compile.

    python bench/fuzz.py --generated 10000 --mutated 10000
    python bench/fuzz.py --generated 2000 --jobs 2 --every-definition
    python bench/fuzz.py --generated 0 --mutated 0 --semantic 20000 --jobs 2

`--semantic N` is differential fuzzing: N generated programs, each definition compiled to a
module and held to the reference interpreter (`ncd.semantics`) on random inputs, for several
run-time values of the symbolic sizes (`tests/differential.py`); a disagreement is a finding.

Each input comes from one seed (`--seed` + its index), so any finding can be regenerated.
A guarantee that breaks (a Python exception other than a diagnostic, a diagnostic without a
location, generated code that does more than define the model, an unsafe SVG, an input that
takes longer than `--timeout` seconds) is counted and the input is saved under
`bench/fuzz-findings/` with the traceback; the summary groups findings by their cause.
Exit status: 0 when nothing broke, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from differential import semantic_program  # noqa: E402
from fuzz_strategies import (  # noqa: E402
    ProgramGenerator,
    RandomChooser,
    Violation,
    exercise,
    mutate,
)

MUTATED_SEED_OFFSET = 10_000_000  # mutated inputs use seeds of their own


@dataclass(frozen=True)
class Job:
    kind: str  # "generated" or "mutated"
    seed: int
    every_definition: bool
    build: bool
    timeout: float


@dataclass(frozen=True)
class Result:
    job: Job
    accepted: bool
    seconds: float
    text: str = ""
    stage: str = ""
    message: str = ""
    details: str = ""
    compared: int = 0  # differential runs: size choices compared with the interpreter
    refused: int = 0  # ... and refused by both sides (a read out of bounds)
    ill_conditioned: int = 0  # ... outputs whose disagreement is below the module's own wobble
    skipped: int = 0  # ... and definitions that could not be compared
    constructs: frozenset[str] = frozenset()

    @property
    def broken(self) -> bool:
        return bool(self.stage)


class Timeout(Exception):
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Timeout


def source_of(job: Job) -> str:
    if job.kind == "generated":
        return ProgramGenerator(RandomChooser(job.seed)).program()
    if job.kind == "semantic":
        return semantic_program(job.seed)
    chooser = RandomChooser(MUTATED_SEED_OFFSET + job.seed)
    return mutate(chooser, ProgramGenerator(chooser).program())


def run_semantic(job: Job, text: str) -> Result:
    """The program's modules against the interpreter; any disagreement is a finding."""
    import traceback

    from differential import compare_text, constructs

    from ncd.api import load

    start = time.perf_counter()
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, job.timeout)
    try:
        used = frozenset(constructs(load(text).ir))
        reports = compare_text(text, seed=job.seed)
    except Timeout:
        return Result(job, False, time.perf_counter() - start, text, "timeout",
                      f"no answer within {job.timeout:g} s")
    except Exception as error:
        return Result(job, False, time.perf_counter() - start, text, "differential",
                      f"{type(error).__name__}: {error}"[:300], traceback.format_exc())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    seconds = time.perf_counter() - start
    findings = [f for report in reports.values() for f in report.findings]
    compared = sum(r.compared for r in reports.values())
    refused = sum(r.refused for r in reports.values())
    ill_conditioned = sum(r.ill_conditioned for r in reports.values())
    skipped = sum(1 for r in reports.values() if r.skipped is not None)
    if findings:
        first = findings[0]
        return Result(job, True, seconds, text, f"semantic {first.kind}",
                      f"{first.message}"[:300], "\n".join(map(str, findings)),
                      compared=compared, refused=refused, skipped=skipped,
                      ill_conditioned=ill_conditioned, constructs=used)
    return Result(job, True, seconds, compared=compared, refused=refused, skipped=skipped,
                  ill_conditioned=ill_conditioned, constructs=used)


def run(job: Job) -> Result:
    text = source_of(job)
    if job.kind == "semantic":
        return run_semantic(job, text)
    start = time.perf_counter()
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, job.timeout)
    try:
        outcome = exercise(text, every_definition=job.every_definition, build=job.build)
    except Violation as violation:
        return Result(job, False, time.perf_counter() - start, text, violation.stage,
                      violation.message, violation.details)
    except Timeout:
        return Result(job, False, time.perf_counter() - start, text, "timeout",
                      f"no answer within {job.timeout:g} s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    seconds = time.perf_counter() - start
    if job.kind == "generated" and not outcome.accepted:
        return Result(job, False, seconds, text, "check",
                      "a generated (valid) program was rejected: " + ", ".join(outcome.codes))
    return Result(job, outcome.accepted, seconds)


def signature(result: Result) -> str:
    """What groups findings: the stage, the error and where in ncd it was raised."""
    where = ""
    for line in result.details.splitlines():
        if line.strip().startswith('File "') and "/fuzz_strategies.py" not in line:
            where = line.strip().split(",")[0].removeprefix('File "').rstrip('"') + ":" + \
                line.split("line ")[-1].split(",")[0]
    first = result.message.split(":")[0]
    return f"{result.stage}: {first}" + (f" at {Path(where).name}" if where else "")


def save(result: Result, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(result.text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    path = folder / f"{result.job.kind}-{result.job.seed}-{result.stage}-{digest}.ncd"
    path.write_bytes(result.text.encode("utf-8", "surrogatepass"))
    path.with_suffix(".txt").write_text(
        f"{result.job.kind} seed {result.job.seed}\n"
        f"{result.stage}: {result.message}\n\n{result.details}", encoding="utf-8")
    return path


def jobs(args: argparse.Namespace) -> Iterator[Job]:
    for index in range(args.generated):
        yield Job("generated", args.seed + index, args.every_definition,
                  args.build, args.timeout)
    for index in range(args.mutated):
        yield Job("mutated", args.seed + index, args.every_definition,
                  args.build, args.timeout)
    for index in range(args.semantic):
        yield Job("semantic", args.seed + index, True, True, args.timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generated", type=int, default=1000, help="valid programs to try")
    parser.add_argument("--mutated", type=int, default=1000, help="corrupted programs to try")
    parser.add_argument("--semantic", type=int, default=0,
                        help="valid programs to compile and hold to the reference interpreter")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first input")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds one input may take")
    parser.add_argument("--every-definition", action="store_true",
                        help="render every definition, not only the main one")
    parser.add_argument("--build", action="store_true",
                        help="also run the generated code and instantiate its modules (torch)")
    parser.add_argument("--findings", type=Path, default=ROOT / "bench" / "fuzz-findings",
                        help="where crashing inputs are saved")
    parser.add_argument("--keep", type=int, default=3,
                        help="inputs saved per kind of finding")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    counts: Counter[str] = Counter()
    findings: Counter[str] = Counter()
    examples: dict[str, Path] = {}
    slowest: tuple[float, Job] | None = None
    total = args.generated + args.mutated + args.semantic
    coverage: Counter[str] = Counter()
    semantic: Counter[str] = Counter()
    done = 0
    pool = multiprocessing.Pool(args.jobs) if args.jobs > 1 else None
    results = pool.imap_unordered(run, jobs(args), chunksize=20) if pool else map(run, jobs(args))
    try:
        for result in results:
            done += 1
            counts[f"{result.job.kind} " + ("broken" if result.broken else "accepted"
                                            if result.accepted else "rejected")] += 1
            if result.job.kind == "semantic":
                coverage.update(result.constructs)
                semantic.update(compared=result.compared, refused=result.refused,
                                skipped=result.skipped, ill=result.ill_conditioned)
            if slowest is None or result.seconds > slowest[0]:
                slowest = (result.seconds, result.job)
            if result.broken:
                key = signature(result)
                findings[key] += 1
                if findings[key] <= args.keep:
                    path = save(result, args.findings)
                    examples.setdefault(key, path)
            if done % 1000 == 0:
                print(f"  {done}/{total} inputs, {sum(findings.values())} findings, "
                      f"{time.perf_counter() - start:.0f} s", flush=True)
    finally:
        if pool:
            pool.close()
            pool.join()
    elapsed = time.perf_counter() - start
    print(f"\nfuzzed {done} inputs in {elapsed:.1f} s ({args.jobs} job(s), seed {args.seed})")
    for kind in ("generated", "mutated", "semantic"):
        line = ", ".join(f"{counts[f'{kind} {what}']} {what}"
                         for what in ("accepted", "rejected", "broken"))
        print(f"  {kind:9}: {line}")
    if args.semantic:
        print(f"  differential: {semantic['compared']} size choices compared with the "
              f"interpreter, {semantic['refused']} refused by both (out of bounds), "
              f"{semantic['skipped']} definitions not comparable, {semantic['ill']} outputs "
              f"ill-conditioned (they move as much under rounding-level changes of the inputs)")
        print("  constructs (programs using each):")
        for construct, count in sorted(coverage.items()):
            print(f"    {count:6}  {construct}")
    if slowest:
        print(f"  slowest input: {slowest[0]:.2f} s ({slowest[1].kind} seed {slowest[1].seed})")
    if not findings:
        print("no tracebacks, every rejection located, every output safe")
        return 0
    print(f"{sum(findings.values())} findings of {len(findings)} kinds:")
    for key, count in findings.most_common():
        print(f"  {count:6}  {key}\n          e.g. {examples.get(key, '')}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
