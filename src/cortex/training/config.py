"""Hydra configs for ``cortex train``: find ``configs/``, compose with overrides, validate everything at once.

The composed config has five sections::

    tree:    {roots: {...}, trunk: {...}, branches: {...}, leaves: {...}}   # architecture (tasks add their leaves)
    tasks:   {name: {kind: regression | classification | denoising_lm | sequence_regression, data: <source>, ...}}
    data:    {name: {source: ... | builtin: ehrlich | routing, columns: {...}, splits: {...}, ...}}
    trainer: {...TrainSettings fields...}
    output:  {name: <registry entry name>, register: true}

Groups under ``configs/``: ``roots/``, ``trunk/``, ``branches/`` and ``tree/`` (architecture
pieces and presets), ``tasks/``, ``data/``, ``trainer/`` and ``experiment/`` (a whole run, chosen
with ``experiment=<name>``). :func:`validate_config` checks the composed config before anything
heavy (no data is loaded, no weights are built) and reports every problem in one
:class:`~cortex.errors.ConfigError`, each naming its field and, for unknown keys, the closest valid one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cortex._validate import Problems, check_type
from cortex.errors import ConfigError, closest
from cortex.tasks import Task, parse_task
from cortex.training.settings import TrainSettings, parse_settings

CONFIG_NAME = "train"
SECTIONS = ("tree", "tasks", "data", "trainer", "output")
GROUPS = ("roots", "trunk", "branches", "tree", "tasks", "data", "trainer", "experiment")


# ---------------------------------------------------------------------------------------- finding
def packaged_config_dir() -> Path:
    """The ``configs`` folder shipped inside the installed package (see :mod:`cortex.configs`)."""
    from cortex.configs import config_dir

    return config_dir()


def find_config_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The folder holding ``train.yaml``: ``explicit``, ``$CORTEX_CONFIG_DIR``, or the configs shipped
    in the package (``cortex/configs``, read through ``importlib.resources``)."""
    candidates = [explicit, os.environ.get("CORTEX_CONFIG_DIR"), packaged_config_dir()]
    for c in candidates:
        if c is not None and (Path(c) / f"{CONFIG_NAME}.yaml").is_file():
            return Path(c).resolve()
    if explicit is not None:
        raise ConfigError(f"--config-dir {explicit} holds no {CONFIG_NAME}.yaml; point it at cortex's configs/ folder.")
    raise ConfigError(
        "cortex cannot find its configs/ folder (looked in $CORTEX_CONFIG_DIR, the package and the repository). "
        "Pass --config-dir PATH or set CORTEX_CONFIG_DIR."
    )


def group_options(config_dir: Path, group: str) -> list[str]:
    """Option names of a config group (``*.yaml`` files in ``config_dir/group``)."""
    folder = Path(config_dir) / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _register_resolvers() -> None:
    """``${cortex_minilm:}`` → the packaged MiniLM folder (configs name it instead of a path)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("cortex_minilm"):
        from cortex.resources import minilm_dir

        OmegaConf.register_new_resolver("cortex_minilm", lambda: str(minilm_dir()))


# --------------------------------------------------------------------------------------- composing
def compose_config(
    overrides: Sequence[str] = (), config_dir: str | os.PathLike | None = None, config_name: str = CONFIG_NAME,
) -> dict[str, Any]:
    """Compose ``config_name`` with Hydra ``overrides`` into a plain, resolved dict.

    Every bad override is reported in one :class:`ConfigError` (an unknown key with the closest
    existing one, an unknown group option with the available ones), not just the first.
    """
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    folder = find_config_dir(config_dir)
    _register_resolvers()
    remaining = [_open_override(o) for o in overrides]
    problems = Problems()
    for _ in range(len(remaining) + 1):
        try:
            cfg = _compose(folder, config_name, remaining)
            break
        except (HydraException, OmegaConfBaseException) as e:
            bad, message = _explain(e, folder, config_name, remaining)
            problems.add(message)
            if bad is None or bad not in remaining:
                problems.raise_if_any("config")
            remaining.remove(bad)
    problems.raise_if_any("config")
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as e:
        raise ConfigError(f"config: cannot resolve an interpolation: {e}".replace("\n", " ")) from e


OPEN_SECTIONS = ("tree.", "tasks.", "data.")


def _open_override(override: str) -> str:
    """``tasks.x.weight=2`` → ``++tasks.x.weight=2``: set-or-add for the open sections.

    Tasks, data sources and tree nodes have optional fields their YAML need not list; Hydra's struct
    mode would refuse to set those, so they are added, and :func:`validate_config` then reports a
    mistyped field by name with the closest valid one. ``trainer`` and ``output`` list every field,
    so Hydra refuses unknown keys there directly.
    """
    if override[:1] in "+~" or "=" not in override:
        return override
    return "++" + override if override.startswith(OPEN_SECTIONS) else override


def _compose(folder: Path, config_name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(folder), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def _explain(error: Exception, folder: Path, config_name: str, overrides: list[str]) -> tuple[str | None, str]:
    """Which override broke composition and a message naming the fix."""
    text = " ".join(str(error).split())
    cause = error.__cause__
    detail = " ".join(str(cause).split()) if cause is not None else ""
    match = re.search(r"override '([^']+)'", text) or re.search(r"Could not append to config\. An item is already at '([^']+)'", text)
    if match:
        key = match.group(1)
        bad = next((o for o in overrides if o.lstrip("+~").split("=", 1)[0] == key), None)
        if key in GROUPS and group_options(folder, key):
            where = {"trunk": "tree.trunk", "roots": "tree.roots.<name>", "branches": "tree.branches.<name>",
                     "tasks": "tasks.<name>", "data": "data.<name>"}.get(key, key)
            return bad, (f"{key!r} is a config group placed at {where}; select an option with {key}@{where}=<option> "
                         f"(options: {', '.join(group_options(folder, key))}).")
        suggestion = _closest_key(folder, config_name, [o for o in overrides if o != bad], key)
        return bad, f"{key!r} is not a config key.{suggestion} Add a new key with +{key}=... if you mean to."
    match = re.search(r"Could not find '([^']+)'", text) or re.search(r"In '[^']+': Could not find '([^']+)'", text)
    if match:
        path = match.group(1)
        group, _, option = path.rpartition("/")
        options = group_options(folder, group)
        bad = next((o for o in overrides if o.split("=", 1)[0].lstrip("+~").split("@")[0] == group
                    and o.endswith(option)), None)
        near = closest(option, options)
        hint = f" Did you mean {', '.join(repr(n) for n in near)}?" if near else ""
        return bad, f"{group}={option!r} is not a config option.{hint} Options: {', '.join(options) or 'none'}."
    bad = None
    for o in overrides:
        if o.split("=", 1)[0].lstrip("+~") in text or (detail and o in detail):
            bad = o
            break
    return bad, f"cannot compose the config: {text}{(' (' + detail + ')') if detail and detail not in text else ''}"


def _closest_key(folder: Path, config_name: str, overrides: list[str], key: str) -> str:
    base = None
    # the other overrides may be broken too (they get their own messages): fall back to fewer of them
    selections = [o for o in overrides if "." not in o.split("=", 1)[0]]
    for attempt in (overrides, selections, []):
        try:
            base = _compose(folder, config_name, attempt)
            break
        except Exception:  # noqa: BLE001 - any composition failure just means: try with fewer overrides
            continue
    if base is None:
        return ""
    node, parts = base, key.split(".")
    for part in parts[:-1]:
        if not isinstance(node, Mapping) or part not in node:
            near = closest(part, list(node.keys()) if isinstance(node, Mapping) else [])
            return f" {part!r} does not exist there." + (f" Did you mean {near[0]!r}?" if near else "")
        node = node[part]
    near = closest(parts[-1], [str(k) for k in node.keys()]) if isinstance(node, Mapping) else []
    prefix = ".".join(parts[:-1])
    return f" Did you mean {', '.join(repr(f'{prefix}.{n}' if prefix else n) for n in near)}?" if near else ""


# -------------------------------------------------------------------------------------- validating
@dataclass
class OutputSpec:
    """Where the trained tree goes: registry entry ``name`` (when ``register``)."""

    name: str = "tree"
    register: bool = True


@dataclass
class RunConfig:
    """A validated run: tree dict, tasks, data specs, settings and output, plus the composed dict."""

    tree: dict[str, Any]
    tasks: list[Task]
    data: dict[str, Any]
    settings: TrainSettings
    output: OutputSpec
    raw: dict[str, Any] = field(default_factory=dict)


def validate_config(cfg: Mapping[str, Any]) -> RunConfig:
    """Check a composed config without loading data or building weights; one :class:`ConfigError` lists all problems."""
    from cortex.training.datamodules import parse_data_spec

    problems = Problems()
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"config must be a mapping of {', '.join(SECTIONS)}; got {type(cfg).__name__}.")
    for key in cfg:
        if key not in SECTIONS:
            problems.add(str(ConfigError.unknown_key(key, SECTIONS, "config")))
    data = _section(cfg, "data", problems)
    specs = {}
    for name, node in data.items():
        spec = parse_data_spec(str(name), node, problems)
        if spec is not None:
            specs[str(name)] = spec
    tasks_cfg = _section(cfg, "tasks", problems)
    if not tasks_cfg:
        problems.add("tasks is empty: choose an experiment (cortex train experiment=ehrlich) or add tasks.<name>.")
    tasks: list[Task] = []
    for name, node in tasks_cfg.items():
        if isinstance(node, Mapping) and node.get("data") is None and len(specs) == 1:
            node = {**node, "data": next(iter(specs))}  # one data source: tasks read it by default
        task = parse_task(str(name), node, problems)
        if task is None:
            continue
        tasks.append(task)
        if task.data is None:
            problems.add(f"tasks.{task.name}.data is not set; name one of the data sources {sorted(specs) or '(none)'}.")
        elif task.data not in data:
            near = closest(task.data, list(specs))
            hint = f" Did you mean {near[0]!r}?" if near else ""
            problems.add(f"tasks.{task.name}.data={task.data!r} names no data source; sources are {sorted(specs)}.{hint}")
    tree = _check_tree(_section(cfg, "tree", problems), tasks, problems)
    settings = parse_settings(cfg.get("trainer") or {}, problems)
    output = _check_output(cfg.get("output") or {}, problems)
    problems.raise_if_any("config")
    return RunConfig(tree=tree, tasks=tasks, data=specs, settings=settings, output=output, raw=dict(cfg))


def _section(cfg: Mapping[str, Any], name: str, problems: Problems) -> dict[str, Any]:
    value = cfg.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.add(f"{name} must be a mapping; got {value!r}.")
        return {}
    return dict(value)


def _check_tree(tree: dict[str, Any], tasks: list[Task], problems: Problems) -> dict[str, Any]:
    """The tree with each task's leaf, checked as a ``NeuralTreeConfig`` (class counts unknown until the
    data is read are taken as 2 here: only the structure is checked)."""
    from cortex.models.neural_tree import NeuralTreeConfig

    known = ("roots", "trunk", "branches", "leaves", "initializer_range")
    for key in tree:
        if key not in known:
            problems.add(str(ConfigError.unknown_key(key, known, "tree")))
    tree = {k: v for k, v in tree.items() if k in known}
    if not tree.get("roots"):
        problems.add("tree.roots is empty; pick a tree preset (tree=ehrlich_small) or add tree.roots.<name>.")
        return tree
    roots = list(tree["roots"])
    branches = list((tree.get("branches") or {}).keys())
    leaves = dict(tree.get("leaves") or {})
    for task in tasks:
        where = f"tasks.{task.name}"
        unknown = [r for r in task.inputs if r not in roots]
        if unknown:
            problems.add(f"{where}.inputs names root(s) {unknown} that the tree lacks; tree.roots are {roots}.")
        missing = [r for r in roots if r not in task.inputs]
        if missing:
            problems.add(f"{where}.inputs has no column for root(s) {missing}; every root needs one (a tree's forward reads all roots).")
        if task.leaf_key in leaves:
            continue
        branch = task.branch if task.branch is not None else (branches[0] if len(branches) == 1 else None)
        if branch is None:
            problems.add(f"{where}.branch is not set and the tree has branches {branches}; name one.")
            continue
        if branch not in branches:
            near = closest(branch, branches)
            problems.add(f"{where}.branch={branch!r} is not a branch of the tree ({branches})."
                         + (f" Did you mean {near[0]!r}?" if near else ""))
            continue
        probe = _with_classes(task) if getattr(task, "num_classes", 0) is None else task
        leaves[task.leaf_key] = probe.leaf_spec(branch)
    if not problems:
        try:
            NeuralTreeConfig(**{**tree, "leaves": leaves})
        except ConfigError as e:
            for q in e.problems:
                problems.add(f"tree: {q.message}", f"tree.{q.field}" if q.field else None, q.value)
    return tree


def _with_classes(task: Task) -> Task:
    """A stand-in with two classes for structural checks of a classification leaf whose class count comes from data."""
    import copy

    probe = copy.copy(task)
    probe.num_classes = 2
    return probe


def _check_output(data: Any, problems: Problems) -> OutputSpec:
    from cortex.hub.paths import validate_name

    if not isinstance(data, Mapping):
        problems.add(f"output must be a mapping such as {{'name': 'my-tree', 'register': true}}; got {data!r}.")
        return OutputSpec()
    for key in data:
        if key not in ("name", "register"):
            problems.add(str(ConfigError.unknown_key(key, ("name", "register"), "output")))
    out = OutputSpec(name=data.get("name", "tree"), register=data.get("register", True))
    check_type("output.register", out.register, (bool,), problems)
    try:
        validate_name(out.name)
    except Exception as e:  # InvalidNameError: name the field and keep the registry's own reason
        problems.add(f"output.name={out.name!r} is not a valid registry name: {e}")
    return out


# --------------------------------------------------------------------------------- group walking
def validate_group_option(group: str, option: str, config_dir: str | os.PathLike | None = None) -> None:
    """Compose ``<group>/<option>.yaml`` on its own and validate it as what its group holds.

    ``experiment`` options are composed into the full ``train`` config and validated with
    :func:`validate_config`; ``roots``/``trunk``/``branches``/``tree`` through ``NeuralTreeConfig``;
    ``tasks``, ``data`` and ``trainer`` through their own parsers. Folders of other tools
    (``design/``, ``router/``) are only composed.
    """
    from cortex.models.neural_tree import NeuralTreeConfig
    from cortex.training.datamodules import parse_data_spec

    if group == "experiment":
        validate_config(compose_config([f"experiment={option}"], config_dir))
        return
    node = compose_config([], config_dir, config_name=f"{group}/{option}")
    if group not in GROUPS:
        return  # another tool's configs (design/, router/): composing them is the check here; their owners validate
    for part in group.split("/"):  # a group's option lands under its group's package
        if isinstance(node, Mapping) and set(node) == {part}:
            node = node[part]
    problems = Problems()
    where = f"{group}/{option}.yaml"
    probe_leaf = {"probe": {"kind": "regressor", "branch": "probe"}}
    probe_branch = {"probe": {"kind": "mlp"}}
    try:
        if group == "roots":
            NeuralTreeConfig(roots={option: node}, branches=probe_branch, leaves=probe_leaf)
        elif group == "trunk":
            NeuralTreeConfig(trunk=node, branches=probe_branch, leaves=probe_leaf)
        elif group == "branches":
            NeuralTreeConfig(branches={"probe": node}, leaves=probe_leaf)
        elif group == "tree":
            for key in node:
                if key not in ("roots", "trunk", "branches", "leaves", "initializer_range"):
                    problems.add(str(ConfigError.unknown_key(key, ("roots", "trunk", "branches", "leaves"), "tree")))
            branches = dict(node.get("branches") or {})
            NeuralTreeConfig(**{**node, "branches": {**branches, **probe_branch}, "leaves": {**(node.get("leaves") or {}), **probe_leaf}})
        elif group == "tasks":
            parse_task(option, node, problems)
        elif group == "data":
            parse_data_spec(option, node, problems)
        elif group == "trainer":
            parse_settings(node, problems)
        else:
            problems.add(f"unknown config group {group!r}; groups are {', '.join(GROUPS)}.")
    except ConfigError as e:
        problems.add(str(e))
    problems.raise_if_any(where)


def config_files(config_dir: str | os.PathLike | None = None, skip: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Every ``(group, option)`` under ``configs/`` plus ``("", "train")``, except folders in ``skip``."""
    folder = find_config_dir(config_dir)
    out = [("", CONFIG_NAME)]
    for path in sorted(folder.rglob("*.yaml")):
        rel = path.relative_to(folder)
        if rel.parts[0] in skip or len(rel.parts) == 1:
            continue
        out.append(("/".join(rel.parts[:-1]), path.stem))
    return out
