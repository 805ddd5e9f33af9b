"""Attack maps of the board planes, computed inside the network: which squares each piece type attacks.

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
"""

from __future__ import annotations

import torch as th
import torch.nn.functional as F
from torch import nn

#: Planes added to the observation: 6 piece types x 2 sides.
N_ATTACK_PLANES = 12

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
        empty = 1.0 - pieces.sum(dim=1, keepdim=True)
        sliders = pieces[:, [2, 3, 4, 8, 9, 10]]  # mover B, R, Q, opponent B, R, Q
        sliding = th.zeros_like(sliders)
        for dr, df in _DIRECTIONS:
            which = _SLIDE_ORTHOGONAL if (dr, df) in _ORTHOGONAL else _SLIDE_DIAGONAL
            ray, reached = sliders[:, which], 0.0
            for _ in range(7):
                ray = _shift(ray, dr, df)
                reached = reached + ray
                ray = ray * empty
            sliding[:, which] += reached
        # Back to piece order: P, N, B, R, Q, K for each side.
        out = [leaping[:, 0:2], sliding[:, 0:3], leaping[:, 2:3], leaping[:, 3:5], sliding[:, 3:6], leaping[:, 5:6]]
        return th.cat(out, dim=1)


def _shift(x: th.Tensor, dr: int, df: int) -> th.Tensor:
    """``x`` moved by ``dr`` ranks and ``df`` files (``out[r, f] = x[r - dr, f - df]``), zero where it came from
    off the board."""
    out = th.zeros_like(x)
    out[..., max(dr, 0) : 8 + min(dr, 0), max(df, 0) : 8 + min(df, 0)] = (
        x[..., max(-dr, 0) : 8 + min(-dr, 0), max(-df, 0) : 8 + min(-df, 0)])
    return out
