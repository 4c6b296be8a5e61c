"""Evaluation suites are typed (a misspelt key exits 2 naming it), thresholds parse with or without spaces,
a grasp evaluation checks grasp thresholds (and one with none that apply is never "passed"), and the quick
suite's thresholds fail the trivial stop / constant baselines on every driving env while the scripted driver
passes them."""

from __future__ import annotations

import json

import pytest
import yaml

from kai_drive.catalog import env_catalog
from kai_drive.evaluation import check_thresholds, evaluate, load_suite, write_outputs
from kai_drive.evaluation.baselines import baseline_policy
from kai_drive.evaluation.suite import SpecError
from kai_drive.evaluate import main

#: driving envs of the catalogue, by their spec's task kind (not by name)
DRIVING = sorted(a for a, p in env_catalog().items() if yaml.safe_load(p.read_text())["task"]["kind"] != "grasp")


# -- typed suites ------------------------------------------------------------------------------------
def _suite_file(tmp_path, data: dict):
    p = tmp_path / "my-suite.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_unknown_suite_key_names_file_and_key_and_exits_2(tmp_path, capsys):
    p = _suite_file(tmp_path, {"seeds": 2, "robustness": {"seedz": 10}})
    with pytest.raises(SpecError, match=r"my-suite\.yaml: robustness\.seedz: unknown key"):
        load_suite(p)
    assert main(["--env", "lane-keep", "--policy", "stop", "--suite", str(p), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "my-suite.yaml" in err and "robustness.seedz" in err
    assert not (tmp_path / "out").exists()  # nothing ran


@pytest.mark.parametrize("data, key", [
    ({"safety": {"penalties": {"cyclist": 0.5}}}, "safety.penalties.cyclist"),
    ({"safety": {"comfort": {"max_jerk": 4.0}}}, "safety.comfort.max_jerk"),
    ({"robustness": {"conditions": {"noise": {"transfrom": {"camera": "black"}}}}}, "robustness.conditions.noise.transfrom"),
    ({"robustness": {"conditions": {"noise": {"transform": {"lidar": "blue"}}}}}, "robustness.conditions.noise.transform.lidar"),
    ({"robustness": {"conditions": {"adv": {"attack": {"method": "pgd", "epsilon": 1}}}}}, "robustness.conditions.adv.attack.epsilon"),
    ({"causal": {"interventions": {"lead": {"contrl": {}}}}}, "causal.interventions.lead.contrl"),
    ({"causal": {"interventions": {"lead": {"expect": "maybe"}}}}, "causal.interventions.lead.expect"),
    ({"causal": {"but_for": {"max_episode": 3}}}, "causal.but_for.max_episode"),
    ({"attribution": {"n_step": 4}}, "attribution.n_step"),
    ({"report": {"video": 2}}, "report.video"),
    ({"seeds": 0}, "seeds"),
    ({"baselines": {"driving": ["halt"]}}, "baselines.driving.0"),
    ({"thresholds": {"safety.colision.rate": "<= 0.2"}}, "thresholds.safety.colision.rate"),
    ({"thresholds": {"grasp": {"safety.route_completion.mean": ">= 0.5"}}}, "thresholds.grasp.safety.route_completion.mean"),
    ({"thresholds": {"safety.collision.rate": "=< 0.2"}}, "thresholds.safety.collision.rate"),
    ({"thresholds": {"safety.collision.rate": 0.2}}, "thresholds.safety.collision.rate"),
])  # fmt: skip
def test_every_level_is_strict(tmp_path, data, key):
    with pytest.raises(SpecError, match=rf"my-suite\.yaml: {key.replace('.', r'.')}: "):
        load_suite(_suite_file(tmp_path, data))


def test_shipped_suites_validate_and_keep_their_keys():
    for name in ("quick", "full"):
        s = load_suite(name)
        assert s["name"] == name and s["seeds"] >= 10
        assert set(s["robustness"]["conditions"]) >= {"obs_noise", "lidar_missing", "adversarial"}
        assert s["causal"]["interventions"]["lead_brake"]["control"] == {"lead.brake_at_s": None}
        g = s["thresholds"]["grasp"]
        assert {"safety.success.rate", "safety.drops.mean", "safety.peak_contact_force_n.max"} <= set(g)
        assert s["env_config"]["grasp"]["task.object_split"] == "test"  # grasp success is on the test objects
    # only what a file sets is returned (defaults apply where a section is consumed)
    assert load_suite({"seeds": 3}) == {"seeds": 3}


@pytest.mark.parametrize("cond, passed", [("<=0.2", True), ("<= 0.2", True), ("  <=0.2 ", True), (">=0.8", False),
                                          ("< 1e-1", False), (">-1", True), ("==0.1", True)])
def test_thresholds_parse_with_or_without_spaces(cond, passed):
    (t,) = check_thresholds({"safety": {"collision": {"rate": 0.1}}}, {"safety.collision.rate": cond})
    assert t["passed"] is passed
    assert load_suite({"thresholds": {"safety.collision.rate": cond}})["thresholds"] == {"safety.collision.rate": cond}


# -- grasp: thresholds that check something --------------------------------------------------------------
def test_grasp_with_no_applicable_threshold_is_not_passed(tmp_path, capsys):
    p = _suite_file(tmp_path, {"seeds": 1, "thresholds": {"safety.collision.rate": "<= 0.2"}, "report": {"videos": 0}})
    out = tmp_path / "out"
    rc = main(["--env", "grasp", "--policy", "scripted", "--suite", str(p), "--sections", "safety", "--no-baselines",
               "--no-progress", "--out", str(out)])
    assert rc == 3  # neither 0 (passed) nor 1 (failed): nothing was checked
    assert "none apply" in capsys.readouterr().out
    res = json.loads((out / "result.json").read_text())
    assert res["passed"] is None and [t["passed"] for t in res["thresholds"]] == [None]
    assert "no thresholds apply" in (out / "report.md").read_text()


def test_grasp_quick_thresholds_are_checked_and_fail_the_zero_action():
    res = evaluate("scripted", "grasp", "quick", seeds=2, sections=("safety",))
    checked = {t["path"]: t["passed"] for t in res["thresholds"] if t["passed"] is not None}
    assert {"safety.success.rate", "safety.drops.mean", "safety.peak_contact_force_n.max"} <= set(checked)
    assert res["passed"] is True and res["env_config"]["task.object_split"] == "test"
    stop = res["baselines"]["stop"]
    assert stop["summary"]["success"]["rate"] == 0.0 and stop["passed"] is False
    assert set(res["baselines"]) == {"stop"}
    with pytest.raises(ValueError, match="driving baseline"):
        evaluate("constant", "grasp", {"seeds": 1})


# -- baselines that expose a metric rewarding inaction -------------------------------------------------
def test_baseline_actions():
    assert baseline_policy("stop", "driving")({}).tolist() == [0.0, -1.0]
    a = baseline_policy("constant", "driving")({})
    assert a[0] == 0.0 and 0.0 < a[1] < 1.0
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_policy("reverse", "driving")


@pytest.fixture(scope="module")
def quick_thresholds():
    return load_suite("quick")["thresholds"]


@pytest.mark.parametrize("env", DRIVING)
def test_quick_thresholds_pass_scripted_and_fail_stop_and_constant(env, quick_thresholds, tmp_path):
    # the scripted driver, whole episodes (it finishes every route) on 2 held-out seeds
    res = evaluate("scripted", env, {"seeds": 2, "thresholds": quick_thresholds, "baselines": False},
                   sections=("safety",))
    assert res["passed"] is True, res["thresholds"]
    assert res["renderer"] in ("tiny", "egl", "opengl")
    # stop as the policy, constant as its baseline, same seeds; cut at 10 s (the full-brake car has moved < 1 m
    # by then and never will: its 45 s episodes give the same verdict, docs/evaluation.md)
    res = evaluate("stop", env, {"seeds": 2, "max_episode_s": 10.0, "thresholds": quick_thresholds}, sections=("safety",))
    assert res["passed"] is False and res["policy"] == "stop (full brake)"
    s = res["safety"]["summary"]
    assert s["success"]["rate"] == 0.0 and s["route_completion"]["max"] < 0.05
    assert s["collision"]["rate"] == 0.0  # standing still: a collision-only threshold would pass it
    assert set(res["baselines"]) == {"constant"}  # the policy itself is not repeated as a baseline
    const = res["baselines"]["constant"]
    assert const["passed"] is False and const["summary"]["success"]["rate"] == 0.0, const["thresholds"]
    md = write_outputs(res, tmp_path, videos=0)["report"].read_text()
    assert "## Baselines (same 2 seeds)" in md and "`constant`: constant (straight" in md and "| fail |" in md


def test_stop_policy_fails_the_quick_thresholds_from_the_cli(tmp_path, capsys):
    s = load_suite("quick")
    p = _suite_file(tmp_path, {"seeds": 1, "max_episode_s": 5.0, "thresholds": s["thresholds"]})
    rc = main(["--env", "lane-keep", "--policy", "stop", "--suite", str(p), "--sections", "safety", "--no-progress",
               "--out", str(tmp_path / "out")])
    assert rc == 1
    res = json.loads((tmp_path / "out" / "result.json").read_text())
    assert res["policy"] == "stop (full brake)" and set(res["baselines"]) == {"constant"}  # itself not repeated
    assert res["baselines"]["constant"]["passed"] is False
