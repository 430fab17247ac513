"""Scenario construction helpers for tests."""

from drivediff.scenarios import compile_scenario
from drivediff.scenarios.loader import parse_scenario


def scenario(**fields):
    """A compiled scenario from keyword fields (validated like a YAML file)."""
    raw = {"name": "test"}
    raw.update(fields)
    return compile_scenario(parse_scenario(raw, "test"))
