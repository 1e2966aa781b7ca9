"""MkDocs hooks of the commenv docs (run at build time, offline; nothing is fetched).

- ``on_config``: drops nav entries whose page does not exist yet (feature pages that other
  branches add), so the site builds, with no dead link, before and after they land.
- ``on_page_content``: drops the Sphinx roles (``:class:``, ``:func:``, ...) that some
  docstrings use, which Markdown would print literally; the name stays as code.
- ``on_page_markdown``: replaces ``<!-- commenv:spaces GAME -->`` with a table of the spaces
  that ``commenv.GAME()`` really declares with its default arguments, so each game page shows
  its docstring's summary table beside what the code builds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

SPACES = re.compile(r"<!-- commenv:spaces (\w+) -->")
SPHINX_ROLE = re.compile(r":(?:mod|class|func|meth|attr|data|obj|exc):(<code>)~?")


def _prune(items: list[Any], docs_dir: Path) -> list[Any]:
    kept = []
    for item in items:
        if isinstance(item, dict):
            ((title, value),) = item.items()
            if isinstance(value, list):
                value = _prune(value, docs_dir)
                if value:
                    kept.append({title: value})
            elif "://" in value or (docs_dir / value).is_file():
                kept.append(item)
        elif "://" in item or (docs_dir / item).is_file():
            kept.append(item)
    return kept


def on_config(config: Any) -> Any:
    if config.get("nav"):
        config["nav"] = _prune(config["nav"], Path(config["docs_dir"]))
    return config


def spaces_table(name: str) -> str:
    """The agents, action and observation spaces of ``commenv.<name>()`` (default arguments)."""
    import commenv

    env = commenv.ENVS[name].parallel_env()
    lines = [
        f"Spaces of `commenv.{name}()` with its default arguments, read from the env at build "
        "time:",
        "",
        "| agent | action space | observation space |",
        "|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[str]] = {}
    for agent in env.possible_agents:
        key = (str(env.action_space(agent)), str(env.observation_space(agent)))
        groups.setdefault(key, []).append(agent)
    for (action, observation), agents in groups.items():
        who = f"`{agents[0]}`" if len(agents) == 1 else f"`{agents[0]}` ... `{agents[-1]}`"
        lines.append(f"| {who} | `{action}` | `{observation}` |")
    layout = getattr(env, "obs_layout", None) or getattr(
        getattr(env, "game", None), "obs_layout", None
    )
    if isinstance(layout, dict) and layout:
        parts = ", ".join(f"`{k}` {_fmt_slice(v)}" for k, v in layout.items())
        lines += ["", f"`env.obs_layout` (the observation vector, in order): {parts}."]
    env.close()
    return "\n".join(lines)


def _fmt_slice(value: Any) -> str:
    if isinstance(value, slice):
        return f"[{value.start}:{value.stop}]"
    return f"{value}"


def on_page_markdown(markdown: str, **_: Any) -> str:
    return SPACES.sub(lambda m: spaces_table(m.group(1)), markdown)


def on_page_content(html: str, **_: Any) -> str:
    return SPHINX_ROLE.sub(r"\1", html)
