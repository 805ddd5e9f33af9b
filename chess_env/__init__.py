"""A Gymnasium chess environment with Stockfish reward shaping, built for GRPO.

Importing the package registers ``GRPOChess-v0`` (single env: :class:`ChessEnv`; vector env:
:class:`ChessVectorEnv` as its ``vector_entry_point``). ``gym.make("chess_env:GRPOChess-v0")``
imports it on demand.
"""

from gymnasium.envs.registration import register, registry

from chess_env.encoding import N_ACTIONS, decode_action, encode_move, legal_action_mask, observation
from chess_env.env import ChessEnv
from chess_env.positions import PositionSet, load_positions
from chess_env.vector import ChessVectorEnv

__all__ = [
    "N_ACTIONS",
    "ChessEnv",
    "ChessVectorEnv",
    "PositionSet",
    "decode_action",
    "encode_move",
    "legal_action_mask",
    "load_positions",
    "observation",
]

ENV_ID = "GRPOChess-v0"

if ENV_ID not in registry:
    register(
        id=ENV_ID,
        entry_point="chess_env.env:ChessEnv",
        vector_entry_point="chess_env.vector:ChessVectorEnv",
    )

