"""Differential fuzzing, bounded: the first programs of the long run (`bench/fuzz.py
--semantic N`), each definition compiled and held to the reference interpreter."""

from __future__ import annotations

import functools
import typing

import pytest
from differential import STRUCTURAL_CONSTRUCTS, compare_text, constructs, semantic_program

import ncd
from ncd import ir

PROGRAMS = 100  # the first 85 already hold every construct (checked below)
CHUNK = 20


@functools.cache
def corpus_program(seed: int) -> ir.Program:
    """The checked program of corpus program `seed`, loaded once for both tests below (a file
    runs on one worker: `--dist loadfile`)."""
    return ncd.load(semantic_program(seed)).ir


def operator_kinds() -> list[str]:
    union = typing.get_args(typing.get_args(ir.Operator)[0])
    return [model.model_fields["kind"].default for model in union]


@pytest.mark.parametrize("first", range(0, PROGRAMS, CHUNK))
def test_generated_programs_compute_what_the_interpreter_computes(first: int) -> None:
    compared = skipped = 0
    problems = []
    for seed in range(first, first + CHUNK):
        for report in compare_text(semantic_program(seed), seed=seed,
                                   program=corpus_program(seed)).values():
            compared += report.compared
            skipped += report.skipped is not None
            problems.extend(f"seed {seed}: {finding}" for finding in report.findings)
    assert not problems, "\n".join(problems)
    assert compared >= 2 * CHUNK, "most definitions must be compared, several sizes each"
    assert skipped <= CHUNK // 2, f"{skipped} definitions could not be compared"


def test_the_bounded_corpus_covers_every_construct() -> None:
    covered: set[str] = set()
    for seed in range(PROGRAMS):
        covered |= constructs(corpus_program(seed))
    wanted = {f"op {kind}" for kind in operator_kinds()} | set(STRUCTURAL_CONSTRUCTS)
    assert wanted - covered == set()
