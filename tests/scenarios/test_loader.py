"""Scenario files: the catalog loads; malformed or hostile files give errors naming file and field."""

import textwrap

import pytest

from drivediff.errors import ScenarioError
from drivediff.scenarios import catalog_names, compile_scenario, get_scenario, load_scenario
from drivediff.scenarios.loader import parse_set_options

EXPECTED = {"highway", "merge", "intersection", "roundabout", "ring", "platoon", "cut-in", "lead-braking"}


def test_catalog_has_every_scenario_and_each_compiles():
    assert EXPECTED <= set(catalog_names())
    for name in catalog_names():
        sc = get_scenario(name)
        assert sc.config.name == name
        assert sc.road.num_lanes > 0 and sc.max_vehicles >= sc.initial_count > 0


def test_catalog_values_follow_the_references():
    hw = load_scenario("highway")
    assert (hw.road.lanes, hw.traffic.count, hw.controlled.count) == (4, 50, 1)
    assert hw.dt == pytest.approx(1 / 15)
    assert hw.traffic.idm.time_gap == 1.5 and hw.traffic.idm.a == 3.0 and hw.traffic.idm.b == 5.0
    assert hw.traffic.idm.delta == (3.5, 4.5) and hw.traffic.mobil.min_gain == 0.2
    ring = load_scenario("ring")
    assert ring.traffic.count == 22 and ring.road.length == 230
    assert (ring.traffic.idm.a, ring.traffic.idm.b, ring.traffic.idm.s0, ring.traffic.idm.noise) == (1, 1.5, 2, 0.2)


def test_highway_fast_follows_highway_envs_own_config():
    """The catalog's highway-fast is highway-env's highway-fast-v0, read from highway-env itself."""
    highway_env = pytest.importorskip("highway_env.envs.highway_env")
    he = highway_env.HighwayEnvFast.default_config()
    base = highway_env.HighwayEnv.default_config()
    fast, hw = load_scenario("highway-fast"), load_scenario("highway")
    assert fast.road.lanes == he["lanes_count"] == 3
    assert fast.traffic.count == he["vehicles_count"] == 20
    assert fast.controlled.count == he["controlled_vehicles"] == 1
    assert fast.dt == pytest.approx(1.0 / he["simulation_frequency"])
    assert fast.duration == he["duration"] and fast.controlled.spacing == he["ego_spacing"]
    # everything else is highway-v0's, as in highway-env, where highway-fast-v0 subclasses highway-v0
    assert fast.traffic.spacing == hw.traffic.spacing == 1.0 / he["vehicles_density"] == 1.0 / base["vehicles_density"]
    assert (fast.traffic.speed, fast.traffic.placement, fast.traffic.idm, fast.traffic.mobil, fast.controlled.speed) \
        == (hw.traffic.speed, hw.traffic.placement, hw.traffic.idm, hw.traffic.mobil, hw.controlled.speed)
    assert fast.road.model_dump(exclude={"lanes"}) == hw.road.model_dump(exclude={"lanes"})


def write(tmp_path, text, name="s.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


GOOD = """
name: t
road: {type: highway, lanes: 2, length: 500}
traffic: {count: 3}
"""


def test_overrides_and_set_options(tmp_path):
    p = write(tmp_path, GOOD)
    cfg = load_scenario(p, overrides=parse_set_options(["traffic.count=5", "road.lanes=3", "traffic.speed=[10, 12]"]))
    assert cfg.traffic.count == 5 and cfg.road.lanes == 3 and cfg.traffic.speed == (10.0, 12.0)


@pytest.mark.parametrize("text, fragments", [
    (GOOD + "colour: red\n", ["colour", "unknown field"]),
    ("name: t\nroad: {type: highway, lanes: many}\n", ["road.highway.lanes", "valid integer", "'many'"]),
    ("name: t\nroad: {type: highway, lanes: 12}\n", ["road.highway.lanes", "less than or equal to 8"]),
    ("name: t\nroad: {type: motorway}\n", ["road", "does not match any of the expected tags", "highway"]),
    ("name: t\nroad: {type: highway}\ntraffic: {speed: [30, 10]}\n", ["traffic.speed", "above high"]),
    ("name: t\nroad: {type: highway}\ntraffic: {idm: {time_gap: -1}}\n", ["traffic.idm.time_gap", "greater than 0"]),
    ("name: t\nroad: {type: highway}\ndt: 0\n", ["dt", "greater than 0.001"]),
    ("road: {type: highway}\n", ["name", "Field required"]),
    ("name: t\nroad: {type: highway}\nvehicles: [{lane: lane0, s: 10, behavior: flying}]\n",
     ["vehicles.0.behavior", "'idm'", "'controlled'"]),
])
def test_invalid_fields_name_file_field_and_rule(tmp_path, text, fragments):
    p = write(tmp_path, text)
    with pytest.raises(ScenarioError) as e:
        load_scenario(p)
    msg = str(e.value)
    assert str(p) in msg
    for frag in fragments:
        assert frag in msg, msg


@pytest.mark.parametrize("text, fragment", [
    ("name: t\nroad: {type: highway, lanes: 2}\nvehicles: [{lane: nowhere, s: 10}]\n", "no lane named 'nowhere'"),
    ("name: t\nroad: {type: highway, lanes: 2}\nvehicles: [{lane: lane0, s: 9000}]\n", "outside lane 'lane0'"),
    ("name: t\nroad: {type: highway}\ninflows: [{lane: lane9, rate: 100}]\n", "no lane named 'lane9'"),
    ("name: t\nroad: {type: intersection}\nvehicles: [{lane: in_w, s: 10, route: [out_e]}]\n",
     "does not follow 'in_w'"),
    ("name: t\nroad: {type: highway}\ntraffic: {count: 2, spawn: [ramp]}\n", "unknown spawn area 'ramp'"),
    ("name: t\nroad: {type: highway}\nvehicles: [{lane: lane0, s: 10, behavior: profile}]\n", "no 'profile'"),
])
def test_cross_reference_errors(tmp_path, text, fragment):
    p = write(tmp_path, text)
    with pytest.raises(ScenarioError, match=fragment):
        compile_scenario(load_scenario(p), str(p))


@pytest.mark.parametrize("content, fragment", [
    ("- just\n- a list\n", "top level must be a mapping"),
    ("name: [unclosed\n", "invalid YAML (line"),
    ("", "top level must be a mapping"),
    ("!!python/object/apply:os.system ['echo pwned']\n", "invalid YAML"),
])
def test_hostile_or_broken_yaml(tmp_path, content, fragment):
    p = write(tmp_path, content)
    with pytest.raises(ScenarioError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        load_scenario(p)


def test_alias_bomb_and_huge_files_are_refused(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for k in range(1, 9):
        bomb += f"{chr(97 + k)}: &{chr(97 + k)} [*{chr(96 + k)}, *{chr(96 + k)}, *{chr(96 + k)}, *{chr(96 + k)}, " \
                f"*{chr(96 + k)}, *{chr(96 + k)}, *{chr(96 + k)}, *{chr(96 + k)}, *{chr(96 + k)}, *{chr(96 + k)}]\n"
    with pytest.raises(ScenarioError, match="too many nodes"):
        load_scenario(write(tmp_path, bomb))
    big = tmp_path / "big.yaml"
    big.write_text("name: t\n" + "# " + "x" * 1_100_000 + "\n")
    with pytest.raises(ScenarioError, match="limited to 1 MB"):
        load_scenario(big)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x01" * 10)
    with pytest.raises(ScenarioError, match="not a UTF-8"):
        load_scenario(binary)


def test_unknown_names_and_missing_files():
    with pytest.raises(ScenarioError, match="unknown scenario 'nope'.*highway"):
        load_scenario("nope")
    with pytest.raises(ScenarioError, match="not found"):
        load_scenario("missing/file.yaml")
    with pytest.raises(ScenarioError, match="KEY=VALUE"):
        parse_set_options(["traffic.count"])


def test_spawn_lane_draw_matches_generator_choice():
    """``_random`` draws the lane as ``bisect_right(_span_cdf(lanes), rng.random())``: the same lane and the
    same generator state as ``rng.choice(len(lanes), p=spans / spans.sum())``, which it replaces."""
    import bisect

    import numpy as np

    from drivediff.scenarios.builders import SpawnLane
    from drivediff.scenarios.compiled import _span_cdf

    for n in range(1, 7):
        lanes = [SpawnLane(k, 3.0 * k, 3.0 * k + 17.3 + 41.9 * ((k * 7) % 5)) for k in range(n)]
        spans = np.array([sl.s_hi - sl.s_lo for sl in lanes])
        cdf = _span_cdf(lanes)
        a, b = np.random.default_rng(n), np.random.default_rng(n)
        for _ in range(200):
            assert bisect.bisect_right(cdf, a.random()) == int(b.choice(n, p=spans / spans.sum()))
        assert a.random() == b.random()
