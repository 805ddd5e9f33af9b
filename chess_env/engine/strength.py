"""How strong a Stockfish player is: one mapping from a spec to UCI options and a search limit.

A :class:`Strength` is a handicap (``Skill Level`` or ``UCI_Elo``) and optionally the player's own
search limit (depth, nodes, seconds per move). :meth:`Strength.parse` reads the specs used by the
environment's opponents, the evaluation ladder and the command line (case-insensitive):

==============================  ================================================================
spec                            strength
==============================  ================================================================
``stockfish``, ``sf``           full strength (``Skill Level`` 20)
``sf<N>``                       ``Skill Level`` N (0-20), e.g. ``sf0``
``elo<N>``, ``sf_elo<N>``       ``UCI_LimitStrength`` with ``UCI_Elo`` N, e.g. ``elo1500``
``...@d<N>`` ``@n<N>`` ``@t<S>``  with its own depth, node or move-time limit, e.g. ``sf3@d5``
``[sf:]key=value[,key=value]``  keys ``skill``, ``elo``, ``depth``, ``nodes``, ``movetime``, e.g.
                                ``sf:skill=0``, ``skill=3``, ``elo=1500``, ``depth=1``,
                                ``sf:skill=3,depth=5``
==============================  ================================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import chess.engine

SKILL_LEVELS = range(0, 21)
"""Stockfish's ``Skill Level`` values; 20 is full strength."""
KEYS = ("skill", "elo", "depth", "nodes", "movetime")
_SUFFIXES = {"d": "depth", "n": "nodes", "t": "movetime"}


@dataclass(frozen=True)
class Strength:
    """A Stockfish strength: ``skill`` or ``elo`` (not both), and an optional own search limit.

    Args:
        skill: ``Skill Level`` 0-20. With neither ``skill`` nor ``elo`` the player is at full
            strength, stored as ``skill=20``.
        elo: ``UCI_Elo`` with ``UCI_LimitStrength``; the engine's own range (1350-2850 in
            Stockfish 15.1) is checked by :class:`~chess_env.engine.EnginePlayer` when it starts.
        depth, nodes: search limits, positive ints.
        movetime: seconds per move (not reproducible: the search then depends on the clock).

    Raises:
        ValueError: a value out of range, or both ``skill`` and ``elo``; the message names the value.
    """

    skill: int | None = None
    elo: int | None = None
    depth: int | None = None
    nodes: int | None = None
    movetime: float | None = None

    def __post_init__(self) -> None:
        if self.skill is not None and self.elo is not None:
            raise ValueError(f"set skill or elo, not both (skill={self.skill!r}, elo={self.elo!r})")
        if self.skill is not None and (not _is_int(self.skill) or self.skill not in SKILL_LEVELS):
            raise ValueError(f"skill={self.skill!r} is outside Stockfish's Skill Level range 0-20")
        for name in ("elo", "depth", "nodes"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise ValueError(f"{name}={value!r} must be a positive int")
        if self.movetime is not None and (isinstance(self.movetime, bool) or not self.movetime > 0):
            raise ValueError(f"movetime={self.movetime!r} must be a positive number of seconds")
        if self.skill is None and self.elo is None:
            object.__setattr__(self, "skill", SKILL_LEVELS[-1])

    @classmethod
    def parse(cls, spec: str) -> Strength:
        """Read a strength spec (see the module docstring).

        Raises:
            ValueError: a malformed spec or a value out of range, naming the spec and the value.
        """
        text = spec.strip().lower()
        body = text.split(":", 1)[1] if text.startswith(("sf:", "stockfish:")) else text
        try:
            return cls(**(_parse_pairs(body) if "=" in body else _parse_short(body)))
        except ValueError as exc:
            raise ValueError(f"bad Stockfish strength {spec!r}: {exc}") from None

    @property
    def has_limit(self) -> bool:
        """Whether this strength carries its own search limit."""
        return any(value is not None for value in (self.depth, self.nodes, self.movetime))

    def limit(self, default: chess.engine.Limit | None = None) -> chess.engine.Limit:
        """The search limit: this strength's own, else ``default``, else depth 1."""
        if self.has_limit:
            return chess.engine.Limit(depth=self.depth, nodes=self.nodes, time=self.movetime)
        return default if default is not None else chess.engine.Limit(depth=1)

    def uci_options(self) -> dict[str, Any]:
        """The UCI options that set this handicap; every one is set, so they also undo another handicap."""
        if self.elo is not None:
            return {"Skill Level": SKILL_LEVELS[-1], "UCI_LimitStrength": True, "UCI_Elo": self.elo}
        return {"Skill Level": self.skill, "UCI_LimitStrength": False}

    @property
    def name(self) -> str:
        """Canonical spec, e.g. ``sf0``, ``sf_elo1500``, ``sf3@d5``; ``Strength.parse(s.name) == s``."""
        base = f"sf{self.skill}" if self.elo is None else f"sf_elo{self.elo}"
        for prefix, field in _SUFFIXES.items():
            value = getattr(self, field)
            if value is not None:
                base += f"@{prefix}{value:g}"
        return base

    def describe(self, engine_name: str, limit: chess.engine.Limit) -> str:
        """A player name for PGN headers, e.g. ``Stockfish 15.1 (skill 0, depth 5)``."""
        handicap = f"skill {self.skill}" if self.elo is None else f"UCI_Elo {self.elo}"
        parts = [handicap]
        if limit.depth is not None:
            parts.append(f"depth {limit.depth}")
        if limit.nodes is not None:
            parts.append(f"{limit.nodes} nodes")
        if limit.time is not None:
            parts.append(f"{limit.time:g}s/move")
        return f"{engine_name} ({', '.join(parts)})"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(key: str, text: str) -> int | float:
    """``text`` as the value of ``key``: seconds for ``movetime``, an int for the others."""
    try:
        return float(text) if key == "movetime" else int(text)
    except ValueError:
        kind = "a number of seconds" if key == "movetime" else "an integer"
        raise ValueError(f"{key}={text!r} is not {kind}") from None


def _parse_pairs(body: str) -> dict[str, int | float]:
    fields: dict[str, int | float] = {}
    for item in body.split(","):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in KEYS:
            raise ValueError(f"{item.strip()!r} is not key=value with a key among {KEYS}")
        if key in fields:
            raise ValueError(f"{key} is given twice")
        fields[key] = _number(key, value)
    return fields


def _parse_short(body: str) -> dict[str, int | float]:
    base, *suffixes = body.split("@")
    fields: dict[str, int | float] = {}
    for suffix in suffixes:
        match = re.fullmatch(r"([dnt])(.+)", suffix)
        if match is None or _SUFFIXES[match.group(1)] in fields:
            raise ValueError(f"limit suffix '@{suffix}' is not one of @d<depth>, @n<nodes>, @t<seconds>")
        key = _SUFFIXES[match.group(1)]
        fields[key] = _number(key, match.group(2))
    if base in ("stockfish", "sf"):
        return fields
    if match := re.fullmatch(r"sf(\d+)", base):
        return {"skill": int(match.group(1)), **fields}
    if match := re.fullmatch(r"(?:sf_?)?elo(\d+)", base):
        return {"elo": int(match.group(1)), **fields}
    raise ValueError(f"{base!r} is not stockfish, sf<0-20>, elo<N> or key=value pairs ({', '.join(KEYS)})")
