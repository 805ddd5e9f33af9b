"""Board pictures for ``render_mode="rgb_array"``."""

from __future__ import annotations

import chess
import numpy as np

LIGHT, DARK = (240, 217, 181), (181, 136, 99)


def board_rgb(board: chess.Board, size: int = 400) -> np.ndarray:
    """Draw ``board`` (White at the bottom) as a ``(size, size, 3)`` uint8 image with Unicode pieces."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    squares = np.indices((8, 8)).sum(axis=0) % 2  # [row, file]; row 0 is rank 8 at the top
    image = np.where(squares[..., None] == 0, LIGHT, DARK).astype(np.uint8)
    figure = Figure(figsize=(size / 100, size / 100), dpi=100)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.imshow(image, extent=(0, 8, 0, 8))
    axes.set_axis_off()
    for square, piece in board.piece_map().items():
        axes.text(chess.square_file(square) + 0.5, chess.square_rank(square) + 0.45, piece.unicode_symbol(),
                  ha="center", va="center", fontsize=size / 14, family="DejaVu Sans")
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
