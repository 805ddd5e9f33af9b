"""Attack maps of the board planes, computed inside the network: which squares each piece type attacks, and
from which squares each king would be in check.

A small network trained on tens of thousands of positions sees the pieces but has to learn, from those
positions alone, which squares each piece reaches: a slider's reach depends on every square between it and
its target, so it takes several 3x3 layers to see along a file. :class:`AttackPlanes` hands the network the
attack maps python-chess computes for the same board, as extra input planes, with a fixed (untrained)
convolution and shifts of the observation's own piece planes. The observation space stays the same, so a model
with them is an ordinary :class:`~grpo_agent.policies.ChessResNet` setting (``attack_planes=True``) that
``GRPO.load``, the env and the MaskablePPO comparison all accept as they are.

Plane ``6 * side + t`` (side 0 the mover, 1 the opponent; t = pawn, knight, bishop, rook, queen, king) holds,
on each square, how many of that side's pieces of type t attack it: exactly
``len(board.attackers(colour, square) & board.pieces_mask(t, colour))`` (pins ignored, x-rays not seen
through, a side's own occupied squares included: a defended piece is attacked by its own side), in the
observation's frame (``tests/test_attacks.py`` checks every plane against python-chess).

:class:`CheckPlanes` (``check_planes=True``) adds the king's side of the same geometry: plane ``4 * side + k``
(side 0 the mover's king, 1 the opponent's; k = orthogonal, diagonal, knight, pawn) is 1 on each square from
which a piece of the other side moving that way would attack that king: a rook or queen, a bishop or queen, a
knight, a pawn. A mate is a check from one of the opponent's king's squares that its king cannot answer; a
3x3 layer cannot see that a rook on a1 checks a king on a8 through the empty file between, and these planes say
so on a1 itself, beside the attack counts of the pieces that can get there.
"""

from __future__ import annotations

import torch as th
import torch.nn.functional as F
from torch import nn

#: Planes added to the observation: 6 piece types x 2 sides.
N_ATTACK_PLANES = 12
#: Planes of :class:`CheckPlanes`: 4 ways of giving check x 2 kings.
N_CHECK_PLANES = 8

_KNIGHT = ((1, 2), (2, 1), (2, -1), (1, -2), (-1, -2), (-2, -1), (-2, 1), (-1, 2))
_KING = ((1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1))
_ORTHOGONAL = ((1, 0), (0, 1), (-1, 0), (0, -1))
_DIAGONAL = ((1, 1), (-1, 1), (-1, -1), (1, -1))
_DIRECTIONS = _ORTHOGONAL + _DIAGONAL
# The slider planes (mover B, R, Q, opponent B, R, Q) that move along a file or rank, and along a diagonal.
_SLIDE_ORTHOGONAL = [1, 2, 4, 5]
_SLIDE_DIAGONAL = [0, 2, 3, 5]


class AttackPlanes(nn.Module):
    """Observation ``(B, C, 8, 8)`` (piece planes 0-11 as :func:`chess_env.encoding.observation` builds them)
    -> attack counts ``(B, 12, 8, 8)``.

    Pawns, knights and kings are one fixed 5x5 convolution per plane. Bishops, rooks and queens walk their
    rays one square per step (a shifted copy of the planes that move that way, 7 steps per direction), the ray
    stopping on the first occupied square, which it attacks. Slicing rather than a depthwise 3x3 convolution
    per step: 3-5x faster on CPU (8 against 28-40 ms for 256 positions, one thread). The kernel is a buffer, not a
    parameter: nothing here is trained, and a saved model rebuilds it.
    """

    def __init__(self) -> None:
        super().__init__()
        # Leapers: input planes mover P, N, K, opponent P, N, K; cross-correlation reads x[r + i - 2, f + j - 2],
        # so a piece at offset (dr, df) from the square sits at kernel cell (2 + dr, 2 + df).
        leapers = th.zeros(6, 1, 5, 5)
        for plane, offsets in enumerate((((-1, -1), (-1, 1)), _KNIGHT, _KING, ((1, -1), (1, 1)), _KNIGHT, _KING)):
            # The mover's pawns move up the ranks (rank 0 is the mover's back rank), so a square is attacked by
            # a mover's pawn one rank below it, and by an opponent's pawn one rank above.
            for dr, df in offsets:
                leapers[plane, 0, 2 + dr, 2 + df] = 1.0
        self.register_buffer("leapers", leapers, persistent=False)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        pieces = observations[:, :12]
        leaping = F.conv2d(pieces[:, [0, 1, 5, 6, 7, 11]], self.leapers, padding=2, groups=6)
        sliders = pieces[:, [2, 3, 4, 8, 9, 10]]  # mover B, R, Q, opponent B, R, Q
        sliding = th.zeros_like(sliders)
        empty = _empty(pieces)
        for dr, df in _DIRECTIONS:
            which = _SLIDE_ORTHOGONAL if (dr, df) in _ORTHOGONAL else _SLIDE_DIAGONAL
            sliding[:, which] += _walk(sliders[:, which], empty, dr, df)
        # Back to piece order: P, N, B, R, Q, K for each side.
        out = [leaping[:, 0:2], sliding[:, 0:3], leaping[:, 2:3], leaping[:, 3:5], sliding[:, 3:6], leaping[:, 5:6]]
        return th.cat(out, dim=1)


class CheckPlanes(nn.Module):
    """Observation ``(B, C, 8, 8)`` -> the squares that check each king ``(B, 8, 8, 8)``.

    Each king's rays are walked as :class:`AttackPlanes` walks a queen's (stopping on, and including, the first
    occupied square: a piece there is captured by the checking move, or is the checker); the knight and pawn
    squares are one fixed 5x5 convolution of the king planes.
    """

    def __init__(self) -> None:
        super().__init__()
        # Input planes: mover's king, opponent's king. An opponent's pawn (moving down the ranks) checks the
        # mover's king from a square one rank above it, a mover's pawn the opponent's king from one rank below.
        leapers = th.zeros(4, 1, 5, 5)
        for plane, offsets in enumerate((_KNIGHT, ((-1, -1), (-1, 1)), _KNIGHT, ((1, -1), (1, 1)))):
            for dr, df in offsets:
                leapers[plane, 0, 2 + dr, 2 + df] = 1.0
        self.register_buffer("leapers", leapers, persistent=False)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        pieces = observations[:, :12]
        kings = pieces[:, [5, 11]]
        leaping = F.conv2d(kings[:, [0, 0, 1, 1]], self.leapers, padding=2, groups=4)
        empty = _empty(pieces)
        orthogonal = sum(_walk(kings, empty, dr, df) for dr, df in _ORTHOGONAL)
        diagonal = sum(_walk(kings, empty, dr, df) for dr, df in _DIAGONAL)
        out = [orthogonal[:, 0:1], diagonal[:, 0:1], leaping[:, 0:2],
               orthogonal[:, 1:2], diagonal[:, 1:2], leaping[:, 2:4]]
        return th.cat(out, dim=1)


def _empty(pieces: th.Tensor) -> th.Tensor:
    """1 on the empty squares, ``(B, 1, 8, 8)``."""
    return 1.0 - pieces.sum(dim=1, keepdim=True)


def _walk(sources: th.Tensor, empty: th.Tensor, dr: int, df: int) -> th.Tensor:
    """The squares each source plane reaches along direction ``(dr, df)``: up to and including the first
    occupied square, counted once per source."""
    ray, reached = sources, th.zeros_like(sources)
    for _ in range(7):
        ray = _shift(ray, dr, df)
        reached = reached + ray
        ray = ray * empty
    return reached


def _shift(x: th.Tensor, dr: int, df: int) -> th.Tensor:
    """``x`` moved by ``dr`` ranks and ``df`` files (``out[r, f] = x[r - dr, f - df]``), zero where it came from
    off the board."""
    out = th.zeros_like(x)
    out[..., max(dr, 0) : 8 + min(dr, 0), max(df, 0) : 8 + min(df, 0)] = (
        x[..., max(-dr, 0) : 8 + min(-dr, 0), max(-df, 0) : 8 + min(-df, 0)])
    return out
