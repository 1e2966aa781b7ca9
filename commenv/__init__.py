"""commenv: PettingZoo games in which deep-learning models learn by talking to each other.

>>> import commenv
>>> env = commenv.partial_obs_v0()          # a PettingZoo ParallelEnv, offline
>>> obs, infos = env.reset(seed=0)
>>> sorted(obs)
['agent_0', 'agent_1']
"""

from __future__ import annotations

from commenv.channel import Channel, make_adjacency
from commenv.core import BatchedEnv, BatchedParallelEnv, EnvFamily
from commenv.datasets import DATASETS, load_dataset
from commenv.node_graph import NodeGraphFamily, NodeGraphGame
from commenv.partial_obs import PartialObsGame
from commenv.quiz import QuizFamily, QuizGame

__version__ = "0.1.0"

partial_obs_v0 = EnvFamily("partial_obs_v0", PartialObsGame)
quiz_v0 = QuizFamily("quiz_v0", QuizGame)
node_graph_v0 = NodeGraphFamily("node_graph_v0", NodeGraphGame)

ENVS: dict[str, EnvFamily] = {
    family.name: family for family in (partial_obs_v0, quiz_v0, node_graph_v0)
}


def _register() -> None:
    """Register the games with PettingZoo (>= 1.27); ``commenv.quiz`` registers its
    single-agent Gymnasium view ``commenv/QuizTeacher-v0``."""
    try:
        from pettingzoo import register
    except ImportError:  # older PettingZoo: no registry, the families still work
        return
    for name, family in ENVS.items():
        game, version = name.rsplit("_v", 1)
        env_id = f"commenv/{game}-v{version}"
        for env_type, entry in (("aec", family.env), ("parallel", family.parallel_env)):
            try:
                register(env_type, env_id, entry)
            except Exception:  # already registered (module reloaded)
                pass


_register()

__all__ = [
    "DATASETS",
    "ENVS",
    "BatchedEnv",
    "BatchedParallelEnv",
    "Channel",
    "EnvFamily",
    "load_dataset",
    "make_adjacency",
    "node_graph_v0",
    "partial_obs_v0",
    "quiz_v0",
]
