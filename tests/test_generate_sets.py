"""`generate --arms`: the set/1 manifest, resume and --reuse per arm, clear errors before the
model loads, SDXL folders through the generator."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

import sampler.arm_set as arm_set_mod  # noqa: E402
from sampler.arms import parse_arms  # noqa: E402
from sampler.cli import generate as generate_cmd  # noqa: E402
from sampler.generate import GenerateError, GenerationSettings, generate_pairs  # noqa: E402
from sampler.manifest import (  # noqa: E402
    MANIFEST_NAME,
    OPAQUE_NAME,
    iter_records,
    validate_set_folder,
)
from sampler.params import SamplerParams  # noqa: E402
from sampler.sets import generate_sets  # noqa: E402

STEPS = 2
FAST = GenerationSettings(num_inference_steps=STEPS, height=64, width=64)
PROMPTS = ["a cat on a mat", "a red car"]


def arms(*items):
    return parse_arms([{"name": n, "method": m, "params": p or {}} for n, m, p in items], SamplerParams(num_inference_steps=STEPS))


CFG_SFG = arms(("cfg", "cfg", None), ("sfg", "sfg", None))
PLUS_PAG = arms(("cfg", "cfg", None), ("sfg", "sfg", None), ("pag", "pag", None))


@pytest.fixture
def spy(monkeypatch):
    """The arms each generate_set call was asked for."""
    calls = []
    real = arm_set_mod.generate_set

    def recording(sfg, prompts, arm_list, **kw):
        calls.append(sorted(a.name for a in arm_list))
        return real(sfg, prompts, arm_list, **kw)

    monkeypatch.setattr(arm_set_mod, "generate_set", recording)
    return calls


def run(tmp_path, pipe, model_dir, arm_list, out="out", **kw):
    return generate_sets(PROMPTS, tmp_path / out, arms=arm_list, model_dir=model_dir, settings=FAST, pipeline=pipe,
                         progress=False, **kw)


def test_set_manifest_lines_and_files(tmp_path, tiny_sfg, tiny_model_dir):
    summary = run(tmp_path, tiny_sfg, tiny_model_dir, PLUS_PAG, batch_size=2)
    assert (summary.total, summary.written, summary.images) == (2, 2, 6)
    records = validate_set_folder(tmp_path / "out")
    rec = records[0]
    assert rec.schema_ == "sfgeval.set/1" and rec.baseline == "cfg" and set(rec.images) == {"cfg", "sfg", "pag"}
    assert rec.prompt == PROMPTS[0] and rec.seed == 0 and rec.pair_key == "1:0"
    assert rec.images["pag"].method == "pag" and rec.images["pag"].params["pag_scale"] == 3.0
    assert {a: i.nfe for a, i in rec.images.items()} == {"cfg": 2 * STEPS, "sfg": 2 * (STEPS - STEPS // 2), "pag": 3 * STEPS}
    assert rec.shared_steps[0].arms == ["cfg", "sfg"] and rec.shared_steps[0].counted_in == "cfg"
    assert "num_inference_steps" not in rec.params and rec.params["height"] == 64
    assert len({i.settings_hash for i in rec.images.values()}) == 3
    files = [p for p in (tmp_path / "out").iterdir() if p.suffix == ".png"]
    assert len(files) == 6 and all(OPAQUE_NAME.match(p.name) for p in files)


def test_cfg_and_sfg_images_equal_the_classic_pair(tmp_path, tiny_sfg, tiny_model_dir):
    run(tmp_path, tiny_sfg, tiny_model_dir, CFG_SFG)
    generate_pairs(PROMPTS, tmp_path / "pairs", model_dir=tiny_model_dir, settings=FAST, pipeline=tiny_sfg, progress=False)
    sets = {r.pair_key: r for r in validate_set_folder(tmp_path / "out")}
    for _, pair in iter_records(tmp_path / "pairs"):
        assert sets[pair.pair_key].images["cfg"].sha256 == pair.baseline.sha256
        assert sets[pair.pair_key].images["sfg"].sha256 == pair.treatment.sha256


def test_adding_an_arm_generates_only_that_arm(tmp_path, tiny_sfg, tiny_model_dir, spy):
    run(tmp_path, tiny_sfg, tiny_model_dir, CFG_SFG)
    before = {r.pair_key: r for r in validate_set_folder(tmp_path / "out")}
    spy.clear()
    summary = run(tmp_path, tiny_sfg, tiny_model_dir, PLUS_PAG)
    assert spy == [["pag"], ["pag"]]
    assert (summary.written, summary.images, summary.complete) == (2, 2, 0)
    after = validate_set_folder(tmp_path / "out")
    assert len(after) == 2  # still one line per prompt and seed
    for rec in after:
        assert set(rec.images) == {"cfg", "sfg", "pag"}
        assert rec.images["cfg"] == before[rec.pair_key].images["cfg"]
        assert rec.images["pag"].nfe == 3 * STEPS
    spy.clear()
    again = run(tmp_path, tiny_sfg, tiny_model_dir, PLUS_PAG)
    assert spy == [] and (again.complete, again.images) == (2, 0)


def test_resume_after_a_kill_between_sets(tmp_path, tiny_sfg, tiny_model_dir, spy):
    class Killed(Exception):
        pass

    def kill(key, added):
        raise Killed

    with pytest.raises(Killed):
        run(tmp_path, tiny_sfg, tiny_model_dir, CFG_SFG, on_set=kill)
    assert len(validate_set_folder(tmp_path / "out")) == 1
    spy.clear()
    summary = run(tmp_path, tiny_sfg, tiny_model_dir, CFG_SFG)
    assert (summary.complete, summary.written) == (1, 1) and len(spy) == 1


def test_changed_arm_settings_are_refused_before_loading(tmp_path, tiny_sfg, tiny_model_dir):
    run(tmp_path, tiny_sfg, tiny_model_dir, CFG_SFG)
    manifest = (tmp_path / "out" / MANIFEST_NAME).read_bytes()
    other = arms(("cfg", "cfg", None), ("sfg", "sfg", {"sfg_scale": 4.0}))
    with pytest.raises(GenerateError, match="arm 'sfg' made with other settings"):
        generate_sets(PROMPTS, tmp_path / "out", arms=other, model_dir=tiny_model_dir, settings=FAST, progress=False)
    with pytest.raises(GenerateError, match="baseline arm"):
        run(tmp_path, tiny_sfg, tiny_model_dir, arms(("sfg", "sfg", None), ("cfg", "cfg", None)))
    with pytest.raises(GenerateError, match="different height"):
        generate_sets(PROMPTS, tmp_path / "out", arms=CFG_SFG, model_dir=tiny_model_dir, progress=False,
                      settings=GenerationSettings(num_inference_steps=STEPS, height=32, width=64))
    assert (tmp_path / "out" / MANIFEST_NAME).read_bytes() == manifest


def test_a_pair_folder_is_not_resumed_as_a_set(tmp_path, tiny_sfg, tiny_model_dir):
    generate_pairs(PROMPTS[:1], tmp_path / "out", model_dir=tiny_model_dir, settings=FAST, pipeline=tiny_sfg, progress=False)
    with pytest.raises(GenerateError, match="sfgeval.pair/1 manifest"):
        run(tmp_path, tiny_sfg, tiny_model_dir, CFG_SFG)


def test_reuse_copies_matching_arms_and_generates_the_rest(tmp_path, tiny_sfg, tiny_model_dir, spy):
    run(tmp_path, tiny_sfg, tiny_model_dir, PLUS_PAG, out="src")
    spy.clear()
    wanted = arms(("cfg", "cfg", None), ("sfg", "sfg", None), ("apg", "apg", None))
    summary = run(tmp_path, tiny_sfg, tiny_model_dir, wanted, out="dst", reuse_from=tmp_path / "src")
    assert spy == [["apg"], ["apg"]]
    assert (summary.reused, summary.images) == (4, 6)
    src = {r.pair_key: r for r in validate_set_folder(tmp_path / "src")}
    for rec in validate_set_folder(tmp_path / "dst"):
        assert set(rec.images) == {"cfg", "sfg", "apg"}
        assert rec.images["cfg"].sha256 == src[rec.pair_key].images["cfg"].sha256
        assert rec.images["cfg"].file != src[rec.pair_key].images["cfg"].file
        assert rec.images["cfg"].reused_from and rec.images["apg"].reused_from is None


@pytest.mark.parametrize(
    "content, message",
    [
        ("- {name: cfg, method: cfg}\n- {name: x, method: magic}\n", "unknown method 'magic'"),
        ("- {name: cfg, method: cfg\n", "not valid YAML"),
        ("- {name: cfg, method: cfg}\n", "at least two arms"),
        ("- {name: cfg, method: cfg}\n- {name: p, method: pag, params: {pag_scale: high}}\n", "pag_scale must be a number"),
    ],
)
def test_cli_malformed_arms_file_is_a_clear_error_before_any_model(tmp_path, monkeypatch, content, message):
    cache = tmp_path / "cache"
    monkeypatch.setenv("SFGEVAL_CACHE", str(cache))
    (tmp_path / "arms.yaml").write_text(content)
    (tmp_path / "p.txt").write_text("a cat\n")
    res = CliRunner().invoke(generate_cmd, ["--prompts", str(tmp_path / "p.txt"), "--out", str(tmp_path / "o"), "--tiny",
                                            "--arms", str(tmp_path / "arms.yaml")])
    assert res.exit_code != 0 and "Error" in res.output and message in res.output, res.output
    assert "arms.yaml" in res.output and "Traceback" not in res.output
    assert not cache.exists() and not (tmp_path / "o").exists()  # no model built, nothing written


def test_cli_generates_a_set(tmp_path, tiny_cache, monkeypatch):
    monkeypatch.setenv("SFGEVAL_CACHE", str(tiny_cache))
    (tmp_path / "arms.json").write_text(json.dumps([{"name": "cfg", "method": "cfg"},
                                                    {"name": "zero", "method": "cfg-zero-star", "baseline": True}]))
    (tmp_path / "p.txt").write_text("a cat\na dog\n")
    args = ["--prompts", str(tmp_path / "p.txt"), "--out", str(tmp_path / "o"), "--tiny", "--steps", "2",
            "--arms", str(tmp_path / "arms.json")]
    res = CliRunner().invoke(generate_cmd, args)
    assert res.exit_code == 0, res.output
    assert "4 images written in 2 sets" in res.output
    recs = validate_set_folder(tmp_path / "o")
    assert [r.baseline for r in recs] == ["zero", "zero"]
    res = CliRunner().invoke(generate_cmd, args + ["--save-maps"])
    assert res.exit_code != 0 and "--save-maps" in res.output


# -- SDXL through the generator ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_sdxl_dir(tiny_cache):
    from sampler.tiny import ensure_tiny_model

    return ensure_tiny_model(tiny_cache / "tiny-sdxl", sdxl=True)


def test_sdxl_folder_generates_pairs_and_sets(tmp_path, tiny_sdxl_dir):
    """An SDXL folder used to make `generate` fail with a TypeError."""
    summary = generate_pairs(PROMPTS[:1], tmp_path / "pairs", model_dir=tiny_sdxl_dir, settings=FAST, device="cpu",
                             progress=False)
    assert summary.written == 1
    ((_, rec),) = list(iter_records(tmp_path / "pairs"))
    assert rec.model["pipeline_class"] == "StableDiffusionXLPipeline"
    generate_sets(PROMPTS[:1], tmp_path / "sets", arms=CFG_SFG, model_dir=tiny_sdxl_dir, settings=FAST, device="cpu",
                  progress=False)
    every = arms(("cfg", "cfg", None), ("sfg", "sfg", None), ("pag", "pag", None), ("apg", "apg", None),
                 ("zs", "cfg-zero-star", None))
    sets = generate_sets(PROMPTS[:1], tmp_path / "sets", arms=every, model_dir=tiny_sdxl_dir, settings=FAST,
                         device="cpu", progress=False)
    assert sets.images == 3  # the arms added
    (srec,) = validate_set_folder(tmp_path / "sets")
    assert srec.images["cfg"].sha256 == rec.baseline.sha256 and srec.images["sfg"].sha256 == rec.treatment.sha256


def test_sdxl_folder_missing_its_second_encoder_is_refused(tmp_path, tiny_sdxl_dir):
    import shutil

    broken = tmp_path / "xl"
    shutil.copytree(tiny_sdxl_dir, broken)
    shutil.rmtree(broken / "text_encoder_2")
    with pytest.raises(GenerateError, match="text_encoder_2"):
        generate_sets(PROMPTS[:1], tmp_path / "o", arms=CFG_SFG, model_dir=broken, settings=FAST, progress=False)
