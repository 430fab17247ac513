"""Load scenario files (catalog names or paths) with strict validation and clear errors."""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from drivediff.errors import ScenarioError
from drivediff.scenarios.schema import ScenarioConfig

MAX_FILE_BYTES = 1_000_000
MAX_NODES = 200_000


def catalog_dir() -> Path:
    return Path(str(resources.files("drivediff.scenarios") / "catalog"))


def catalog_names() -> list[str]:
    return sorted(p.stem for p in catalog_dir().glob("*.yaml"))


def list_catalog() -> list[tuple[str, str]]:
    """(name, description) of every catalog scenario."""
    return [(n, load_scenario(n).description) for n in catalog_names()]


def resolve(name_or_path: str | Path) -> Path:
    """The file of a catalog name or a path; raises ScenarioError naming the choices."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists() or len(p.parts) > 1:
        if not p.exists():
            raise ScenarioError(f"scenario file not found: {p}")
        if not p.is_file():
            raise ScenarioError(f"scenario path is not a file: {p}")
        return p
    f = catalog_dir() / f"{name_or_path}.yaml"
    if not f.exists():
        raise ScenarioError(f"unknown scenario {str(name_or_path)!r}; the catalog has: "
                            f"{', '.join(catalog_names())} (or pass a path to a .yaml file)")
    return f


def _count_nodes(obj, budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise ScenarioError("too many nodes (over 200,000): the file is too large or uses recursive aliases")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _count_nodes(k, budget)
            _count_nodes(v, budget)
    elif isinstance(obj, list):
        for v in obj:
            _count_nodes(v, budget)


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _format_errors(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        got = repr(e.get("input"))
        if len(got) > 60:
            got = got[:57] + "..."
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (not allowed here)"
        lines.append(f"{source}: {loc}: {msg} (got {got})")
    return "\n".join(lines)


def parse_scenario(raw: Any, source: str, overrides: dict | None = None) -> ScenarioConfig:
    """Validate a raw mapping (from YAML) into a ScenarioConfig; errors name ``source`` and the field."""
    if not isinstance(raw, dict):
        raise ScenarioError(f"{source}: the top level must be a mapping of fields, got {type(raw).__name__}")
    _count_nodes(raw, [MAX_NODES])
    if overrides:
        raw = _deep_merge(raw, overrides)
    try:
        return ScenarioConfig.model_validate(raw)
    except ValidationError as err:
        raise ScenarioError(_format_errors(source, err)) from None


def load_scenario(name_or_path: str | Path, overrides: dict | None = None) -> ScenarioConfig:
    """Load a catalog scenario by name, or a scenario file by path.

    Args:
        name_or_path: catalog name (``drivediff scenarios`` lists them) or path to a YAML file.
        overrides: nested mapping merged into the file before validation, e.g.
            ``{"controlled": {"count": 4}}``. Unknown keys are rejected like in files.
    """
    path = resolve(name_or_path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ScenarioError(f"{path}: file is {size} bytes; scenario files are limited to 1 MB")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: not a UTF-8 text file") from None
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read: {e.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = ""
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ScenarioError(f"{path}: invalid YAML{where}: {problem}") from None
    return parse_scenario(raw, str(path), overrides)


def parse_set_options(items: list[str]) -> dict:
    """``["controlled.count=4", "traffic.speed=[20, 25]"]`` -> nested override mapping (values are YAML)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ScenarioError(f"--set expects KEY=VALUE (dotted key), got {item!r}")
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ScenarioError(f"--set: empty key in {item!r}")
        try:
            val = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ScenarioError(f"--set {key}: value {value!r} is not valid YAML") from None
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ScenarioError(f"--set: {key} conflicts with another --set")
        node[parts[-1]] = val
    return out
