"""Scenarios: the YAML schema, road builders, the catalog and the loader.

    >>> from drivediff.scenarios import load_scenario, compile_scenario
    >>> cfg = load_scenario("merge", overrides={"controlled": {"count": 4}})
    >>> scenario = compile_scenario(cfg)
"""

from drivediff.scenarios.compiled import CompiledScenario, compile_scenario
from drivediff.scenarios.loader import catalog_names, list_catalog, load_scenario, parse_set_options
from drivediff.scenarios.schema import ScenarioConfig

__all__ = ["CompiledScenario", "ScenarioConfig", "catalog_names", "compile_scenario", "list_catalog",
           "load_scenario", "parse_set_options", "get_scenario"]


def get_scenario(scenario, overrides: dict | None = None) -> CompiledScenario:
    """A CompiledScenario from a catalog name, a path, a ScenarioConfig or a CompiledScenario."""
    if isinstance(scenario, CompiledScenario):
        if overrides:
            raw = scenario.config.model_dump(mode="python")
            from drivediff.scenarios.loader import parse_scenario

            return compile_scenario(parse_scenario(raw, scenario.source, overrides), scenario.source)
        return scenario
    if isinstance(scenario, ScenarioConfig):
        if overrides:
            from drivediff.scenarios.loader import parse_scenario

            scenario = parse_scenario(scenario.model_dump(mode="python"), scenario.name, overrides)
        return compile_scenario(scenario)
    cfg = load_scenario(scenario, overrides)
    return compile_scenario(cfg, str(scenario))
