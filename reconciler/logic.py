"""Boolean conditions over named atoms: HAProxy's condition form, and which rules can never match.  Pure.

A condition is a tree: `Atom(key)`, `All(parts)`, `AnyOf(parts)`, `Not(part)`.  HAProxy has no
parentheses: a condition there is a disjunction of conjunctions of possibly negated ACLs
(`a !b || c`), so trees are written in that form (`dnf`), with a bound on its size.

Reachability is decided by truth tables kept as integers, one bit per assignment of the atoms:
atoms are taken as independent, so a rule called unreachable is unreachable whatever the atoms
mean (two different source networks may overlap, so some shadowing goes unseen, never the reverse).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import product

MAX_TERMS = 64  # conjunctions once expanded: beyond that the haproxy.cfg line is no longer readable
MAX_ATOMS = 16  # truth tables of 2**16 bits; more atoms than that and reachability is not judged


@dataclass(frozen=True)
class Atom:
    key: str


@dataclass(frozen=True)
class All:
    parts: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    part: Condition


Condition = Atom | All | AnyOf | Not
TRUE = All(())  # matches every request
Literal = tuple[bool, str]  # (negated, atom key)
Term = tuple[Literal, ...]  # a conjunction


class TooComplex(ValueError):
    """The condition expands to more than MAX_TERMS conjunctions."""


def dnf(cond: Condition, negated: bool = False) -> list[Term]:
    """`cond` as a disjunction of conjunctions; [] never matches, [()] always does."""
    if isinstance(cond, Atom):
        return [((negated, cond.key),)]
    if isinstance(cond, Not):
        return dnf(cond.part, not negated)
    conjunctive = isinstance(cond, All) != negated  # De Morgan: not any = all of the negations
    parts = [dnf(p, negated) for p in cond.parts]
    if not conjunctive:
        return _simplified([t for part in parts for t in part])
    terms: list[Term] = [()]
    for part in parts:
        terms = _simplified([a + b for a, b in product(terms, part)])
    return terms


def _simplified(terms: Iterable[Term]) -> list[Term]:
    """Without repeated literals, contradictions (x and not x) and repeated terms; bounded."""
    out: list[Term] = []
    for term in terms:
        unique = tuple(dict.fromkeys(term))
        if any((not neg, key) in unique for neg, key in unique):
            continue
        if unique not in out:
            out.append(unique)
        if len(out) > MAX_TERMS:
            raise TooComplex(f"more than {MAX_TERMS} alternatives once written out for HAProxy:"
                             " split it into named conditions or simpler rules")
    return out


def atoms(cond: Condition) -> list[str]:
    """The atom keys of `cond`, in order of appearance."""
    if isinstance(cond, Atom):
        return [cond.key]
    parts = (cond.part,) if isinstance(cond, Not) else cond.parts
    return list(dict.fromkeys(k for p in parts for k in atoms(p)))


def evaluate(cond: Condition, truth: dict[str, bool]) -> bool:
    """`cond` under the given truth of its atoms (an unknown atom is false)."""
    if isinstance(cond, Atom):
        return truth.get(cond.key, False)
    if isinstance(cond, Not):
        return not evaluate(cond.part, truth)
    if isinstance(cond, All):
        return all(evaluate(p, truth) for p in cond.parts)
    return any(evaluate(p, truth) for p in cond.parts)


# --- reachability --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Unreachable:
    index: int  # the rule that can never match
    covered_by: int | None  # one earlier rule that alone takes all it would match, if there is one
    contradiction: bool  # its own condition can never be true


def unreachable(rules: Sequence[Condition]) -> list[Unreachable]:
    """Rules (first match wins) that no request can reach: one earlier rule, or all of them together,
    already take every request it would match, or its own condition contradicts itself."""
    keys = list(dict.fromkeys(k for rule in rules for k in atoms(rule)))
    if len(keys) > MAX_ATOMS:
        return []
    tables = _Tables(keys)
    found: list[Unreachable] = []
    seen: list[int] = []
    earlier = 0
    for i, rule in enumerate(rules):
        table = tables.of(rule)
        if table & ~earlier & tables.full == 0:
            covered = next((j for j, other in enumerate(seen) if table & ~other & tables.full == 0), None)
            found.append(Unreachable(i, covered, table == 0))
        earlier |= table
        seen.append(table)
    return found


class _Tables:
    """Truth tables as integers: bit n is the value under assignment n of the atoms."""

    def __init__(self, keys: list[str]):
        size = 1 << len(keys)
        self.full = (1 << size) - 1
        self.masks = {key: _column(i, size) for i, key in enumerate(keys)}

    def of(self, cond: Condition) -> int:
        if isinstance(cond, Atom):
            return self.masks[cond.key]
        if isinstance(cond, Not):
            return self.full & ~self.of(cond.part)
        if isinstance(cond, All):
            out = self.full
            for part in cond.parts:
                out &= self.of(part)
            return out
        out = 0
        for part in cond.parts:
            out |= self.of(part)
        return out


def _column(i: int, size: int) -> int:
    """The truth table of atom i: assignments whose bit i is set."""
    width = 1 << i
    mask, length = ((1 << width) - 1) << width, 2 * width
    while length < size:
        mask |= mask << length
        length *= 2
    return mask
