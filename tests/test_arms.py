"""Arms files and the sfgeval.set/1 manifest schema: pure Python, no torch."""

from __future__ import annotations

import json

import pytest

from sampler.arms import (
    ArmsError,
    classic_arms,
    parse_arms,
    read_arms,
    resolve_matching,
)
from sampler.manifest import (
    SET_SCHEMA,
    ManifestError,
    iter_set_records,
    validate_set_line,
)
from sampler.params import SamplerParams

DEFAULTS = SamplerParams(num_inference_steps=10, guidance_scale=6.0)


def test_defaults_baseline_and_resolved_sfg_start():
    arms = parse_arms(
        [{"name": "cfg", "method": "cfg"}, {"name": "sfg", "method": "sfg", "params": {"sfg_scale": 5}},
         {"name": "pag", "method": "pag", "params": {"pag_applied_layers": "mid"}}],
        DEFAULTS,
    )
    assert [a.baseline for a in arms] == [True, False, False]
    assert arms[0].params == {"num_inference_steps": 10, "guidance_scale": 6.0}
    assert arms[1].params["sfg_start_step"] == 5 and arms[1].params["sfg_scale"] == 5
    assert arms[2].params["pag_applied_layers"] == ["mid"] and arms[2].params["pag_scale"] == 3.0
    flagged = parse_arms([{"name": "a", "method": "cfg"}, {"name": "b", "method": "apg", "baseline": True}])
    assert [a.baseline for a in flagged] == [False, True]


def test_settings_hash_follows_settings_not_names():
    a, b = parse_arms([{"name": "x", "method": "cfg"}, {"name": "y", "method": "cfg"}])
    c = parse_arms([{"name": "x", "method": "cfg", "params": {"guidance_scale": 5}}, {"name": "z", "method": "cfg"}])[0]
    shared = {"height": 64}
    assert a.settings_hash(shared) == b.settings_hash(shared) != c.settings_hash(shared)
    assert a.settings_hash(shared) != a.settings_hash({"height": 128})


def test_classic_arms_are_cfg_and_sfg():
    arms = classic_arms(SamplerParams(num_inference_steps=8, sfg_scale=4.0))
    assert [(a.name, a.method, a.baseline) for a in arms] == [("cfg", "cfg", True), ("sfg", "sfg", False)]
    assert arms[1].params["sfg_scale"] == 4.0 and arms[1].params["sfg_start_step"] == 4


def test_match_nfe_rule():
    arms = parse_arms([{"name": "cfg", "method": "cfg", "params": {"match_nfe_of": "pag"}},
                       {"name": "pag", "method": "pag"}], DEFAULTS)
    cost = {"cfg": 2, "pag": 3}  # evaluations per step
    out = resolve_matching(arms, lambda a: cost[a.method] * a.steps)
    assert out[0].steps == 15 and out[0].params["base_num_inference_steps"] == 10  # 2 * 15 >= 3 * 10
    assert out[1] is arms[1]


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"name": "x"}, "non-empty list"),
        ([], "non-empty list"),
        ([{"name": "a", "method": "cfg"}], "at least two arms"),
        ([{"name": "a", "method": "cfg"}, {"name": "a", "method": "sfg"}], "used twice"),
        ([{"name": "a", "method": "cfg"}, {"name": "b", "method": "dpo"}], "unknown method 'dpo'"),
        ([{"name": "a b", "method": "cfg"}, {"name": "b", "method": "cfg"}], "name must be"),
        ([{"name": "a", "method": "cfg", "params": {"sfg_scale": 2}}, {"name": "b", "method": "cfg"}], "unknown parameter"),
        ([{"name": "a", "method": "cfg", "colour": 1}, {"name": "b", "method": "cfg"}], "unknown field"),
        ([{"name": "a", "method": "cfg", "params": {"guidance_scale": "big"}}, {"name": "b", "method": "cfg"}], "must be a number"),
        ([{"name": "a", "method": "cfg", "params": {"num_inference_steps": 0}}, {"name": "b", "method": "cfg"}], ">= 1"),
        ([{"name": "a", "method": "sfg", "params": {"token_select": "max"}}, {"name": "b", "method": "cfg"}], "token_select"),
        ([{"name": "a", "method": "apg", "params": {"start": 0.5, "stop": 0.2}}, {"name": "b", "method": "cfg"}], "start and stop"),
        ([{"name": "a", "method": "cfg", "baseline": True}, {"name": "b", "method": "cfg", "baseline": True}], "only one arm"),
        ([{"name": "a", "method": "cfg", "params": {"match_nfe_of": "zz"}}, {"name": "b", "method": "cfg"}], "not another arm"),
        ([{"name": "a", "method": "cfg", "params": {"match_nfe_of": "b"}}, {"name": "b", "method": "cfg", "params": {"match_nfe_of": "a"}}], "no chains"),
        ([{"name": "a", "method": "pag", "params": {"pag_applied_layers": []}}, {"name": "b", "method": "cfg"}], "pag_applied_layers"),
    ],
)
def test_malformed_arms_are_refused_with_the_arm_named(raw, message):
    with pytest.raises(ArmsError, match=message):
        parse_arms(raw)


def test_read_arms_yaml_json_and_file_errors(tmp_path):
    y = tmp_path / "arms.yaml"
    y.write_text("arms:\n  - {name: cfg, method: cfg}\n  - name: z\n    method: cfg-zero-star\n    params: {zero_init_steps: 0}\n")
    assert [a.method for a in read_arms(y)] == ["cfg", "cfg-zero-star"]
    j = tmp_path / "arms.json"
    j.write_text(json.dumps([{"name": "cfg", "method": "cfg"}, {"name": "a", "method": "apg"}]))
    assert [a.name for a in read_arms(j)] == ["cfg", "a"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {name: cfg, method: cfg\n")
    with pytest.raises(ArmsError, match=r"bad.yaml: not valid YAML"):
        read_arms(bad)
    with pytest.raises(ArmsError, match="cannot read"):
        read_arms(tmp_path / "missing.yaml")


def _line(**over):
    img = {"sha256": "a" * 64, "method": "cfg", "params": {}, "nfe": 8}
    raw = {"schema": SET_SCHEMA, "pair_key": "p:0", "prompt_id": "p", "prompt": "a cat", "seed": 0, "baseline": "cfg",
           "images": {"cfg": {**img, "file": "0" * 32 + ".png"}, "pag": {**img, "file": "1" * 32 + ".png", "nfe": 12}},
           "params": {"height": 64}, "model": {"fingerprint": "f"}}
    raw.update(over)
    return raw


def test_a_set_line_validates():
    rec = validate_set_line(_line(shared_steps=[{"arms": ["cfg", "pag"], "steps": 1, "nfe": 2, "counted_in": "cfg"}]))
    assert rec.images["pag"].nfe == 12 and rec.baseline == "cfg"
    assert json.loads(rec.to_json())["schema"] == SET_SCHEMA


@pytest.mark.parametrize(
    "over, message",
    [
        ({"schema": "sfgeval.pair/1"}, "schema"),
        ({"baseline": "sfg"}, "baseline arm 'sfg' has no image"),
        ({"images": {}}, "images"),
        ({"images": {"cfg": {"file": "x.png", "sha256": "a" * 64, "method": "cfg", "params": {}, "nfe": 1},
                     "b": {"file": "1" * 32 + ".png", "sha256": "a" * 64, "method": "cfg", "params": {}, "nfe": 1}}},
         "images.cfg.file"),
        ({"images": {"cfg": {"file": "0" * 32 + ".png", "sha256": "a" * 64, "method": "cfg", "params": {}, "nfe": -2},
                     "b": {"file": "1" * 32 + ".png", "sha256": "a" * 64, "method": "cfg", "params": {}, "nfe": 1}}},
         "images.cfg.nfe"),
        ({"images": {"cfg": {"file": "0" * 32 + ".png", "sha256": "a" * 64, "method": "cfg", "params": {}, "nfe": 1},
                     "b": {"file": "0" * 32 + ".png", "sha256": "a" * 64, "method": "cfg", "params": {}, "nfe": 1}}},
         "same image file"),
        ({"seed": "zero"}, "seed"),
        ({"shared_steps": [{"arms": ["cfg", "zz"], "steps": 1, "nfe": 2, "counted_in": "cfg"}]}, "'zz'"),
    ],
)
def test_malformed_set_lines_get_a_clear_error(over, message):
    with pytest.raises(ManifestError, match=message):
        validate_set_line(_line(**over), "manifest.jsonl:3")


def test_set_reader_names_the_line(tmp_path):
    (tmp_path / "manifest.jsonl").write_text(json.dumps(_line()) + "\n" + json.dumps(_line(pair_key="p:1", baseline="x")) + "\n")
    with pytest.raises(ManifestError, match=r"manifest.jsonl:2: field"):
        list(iter_set_records(tmp_path))
    (tmp_path / "manifest.jsonl").write_text(json.dumps(_line()) + "\n" + json.dumps(_line()) + "\n")
    with pytest.raises(ManifestError, match="repeats line 1"):
        list(iter_set_records(tmp_path))


def test_arms_and_manifest_import_no_torch():
    import subprocess
    import sys

    code = "import sys, sampler.arms, sampler.manifest; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
