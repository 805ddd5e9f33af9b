"""ChessVecEnv: the SB3 VecEnv API over ChessVectorEnv, and MaskablePPO learning through it."""

import chess
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported
from stable_baselines3.common.vec_env import VecEnv, VecMonitor

from chess_env import ChessEnv, ChessVectorEnv, encode_move
from chess_env.sb3 import ChessVecEnv

MATE_IN_ONE = "6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1"
HANGING_QUEEN = "4k3/8/8/3q4/8/8/3R4/4K3 w - - 0 1"


def test_vec_env_api_and_terminal_observation():
    venv = ChessVectorEnv(3, reward_depth=1, engine_processes=1)
    env = ChessVecEnv(venv)
    assert isinstance(env, VecEnv) and env.vector_env is venv
    assert venv.autoreset_mode == AutoresetMode.SAME_STEP
    assert env.observation_space == venv.single_observation_space and env.num_envs == 3
    env.seed(5)
    env.set_options([{"fen": MATE_IN_ONE}, {"fen": chess.STARTING_FEN}, {"fen": MATE_IN_ONE}])
    obs = env.reset()
    assert obs.shape == (3, 21, 8, 8) and env.reset_infos[0]["fen"] == MATE_IN_ONE
    assert has_masks(env)
    masks = get_action_masks(env)
    assert masks.shape == (3, 4672) and masks.dtype == bool and np.array_equal(masks, venv.action_masks())
    mate = encode_move(chess.Board(MATE_IN_ONE), chess.Move.from_uci("a1a8"))
    e4 = encode_move(chess.Board(), chess.Move.from_uci("e2e4"))
    obs, rewards, dones, infos = env.step(np.array([mate, e4, 4671]))
    assert dones.tolist() == [True, False, True] and rewards.dtype == np.float32 and rewards[0] > 0.9
    assert infos[0]["termination"] == "checkmate" and infos[2]["illegal_action"] and not infos[1]["illegal_action"]
    assert "terminal_observation" in infos[0] and "terminal_observation" not in infos[1]
    assert not np.array_equal(infos[0]["terminal_observation"], obs[0])
    assert all(info["TimeLimit.truncated"] is False for info in infos)
    # The returned observation is the new game's (SB3's same-step reset), its info in reset_infos.
    assert env.reset_infos[0]["ply"] == 0 and np.array_equal(obs[0], venv.envs[0]._observation())
    assert env.get_attr("ply") == [0, 1, 0] and env.get_attr("max_plies", indices=1) == [200]
    env.set_attr("max_plies", 2, indices=[1])
    assert [e.max_plies for e in venv.envs] == [200, 2, 200]
    assert env.env_method("action_masks", indices=[1])[0].sum() == 20
    assert env.env_method("pgn", indices=1)[0].endswith("1. e4 *")
    assert env.env_is_wrapped(VecMonitor) == [False] * 3
    # A truncation: TimeLimit.truncated, then a fresh game.
    obs, rewards, dones, infos = env.step(get_action_masks(env).argmax(axis=1))
    assert dones[1] and infos[1]["TimeLimit.truncated"] and infos[1]["ply"] == 2
    with pytest.raises(ValueError, match="per-game reset options"):
        env.set_options([{"fen": MATE_IN_ONE}, {}, {}])
        env.reset()
    venv.autoreset_mode = AutoresetMode.DISABLED
    with pytest.raises(RuntimeError, match="SAME_STEP"):
        env.step(np.zeros(3, dtype=np.int64))
    env.close()
    with pytest.raises(ValueError, match="ChessVectorEnv"):
        ChessVecEnv(ChessEnv(shaping=False))


def has_masks(env) -> bool:
    return env.has_attr("action_masks") and is_masking_supported(env)


def test_group_options_and_seeds_reach_the_vector_env():
    env = ChessVecEnv(ChessVectorEnv(4, shaping=False, start_positions="builtin"))
    env.seed(3)
    env.set_options({"groups": 2, "group_size": 2})
    first = env.reset()
    fens = [board.fen() for board in env.vector_env.boards]
    assert fens[0] == fens[1] and fens[2] == fens[3]
    env.seed(3)
    env.set_options({"groups": 2, "group_size": 2})
    assert np.array_equal(env.reset(), first)
    env.close()


def test_maskable_ppo_learns_through_the_adapter():
    """One-ply episodes from a position with a hanging queen: PPO learns to take it."""
    from sb3_contrib import MaskablePPO

    venv = ChessVectorEnv(8, reward_depth=1, max_plies=1, start_positions=[HANGING_QUEEN], engine_processes=1)
    env = VecMonitor(ChessVecEnv(venv))
    model = MaskablePPO("MlpPolicy", env, n_steps=32, batch_size=64, n_epochs=4, learning_rate=1e-3, seed=0)
    capture = encode_move(chess.Board(HANGING_QUEEN), chess.Move.from_uci("d2d5"))

    def p_capture() -> float:
        obs = env.reset()
        obs_t = model.policy.obs_to_tensor(obs)[0]
        with torch.no_grad():
            dist = model.policy.get_distribution(obs_t, action_masks=get_action_masks(env))
        return float(dist.distribution.probs[0, capture])

    before = p_capture()
    model.learn(total_timesteps=2048)
    after = p_capture()
    assert before < 0.1 and after > 0.8, (before, after)
    assert model.ep_info_buffer and venv.engine_stats()["cache_hit_rate"] > 0.9
    env.close()
