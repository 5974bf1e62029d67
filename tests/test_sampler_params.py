"""One owner per sampler rule: parameters, devices, the guidance formula, the file hasher, and the
generator's checks that run before any model loads."""

from __future__ import annotations

import ast
import hashlib
import inspect
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from sampler import generate as gen_mod  # noqa: E402
from sampler.attention import SFGControl  # noqa: E402
from sampler.cli import generate as generate_cmd  # noqa: E402
from sampler.devices import DeviceError, resolve_device, resolve_dtype  # noqa: E402
from sampler.generate import GenerateError, GenerationSettings, generate_pairs  # noqa: E402
from sampler.manifest import sha256_file  # noqa: E402
from sampler.params import SamplerParams  # noqa: E402
from sampler.pipeline import apply_guidance  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_cli_defaults_are_the_settings_defaults():
    options = {p.name: p.default for p in generate_cmd.params}
    d = SamplerParams()
    assert (options["steps"], options["guidance_scale"], options["sfg_scale"], options["sfg_guidance_scale"],
            options["token_select"], options["include_eos"], options["sfg_start_step"]) == (
        d.num_inference_steps, d.guidance_scale, d.sfg_scale, d.sfg_guidance_scale, d.token_select, d.include_eos,
        d.sfg_start_step)
    assert SFGControl().scale == d.sfg_scale and SFGControl().token_select == d.token_select
    assert GenerationSettings().start_step() == d.num_inference_steps // 2


def test_the_sfg_defaults_are_written_once():
    """The literal defaults live in sampler/params.py only (not repeated in other sampler modules)."""
    for path in (ROOT / "sampler").glob("*.py"):
        if path.name == "params.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.arguments):
                for default in node.defaults + node.kw_defaults:
                    value = default.value if isinstance(default, ast.Constant) else None
                    assert not (type(value) in (float, str) and value in (7.5, 10.0, 3.0, "head_mean")), (
                        f"{path.name}:{default.lineno}: a sampler default written outside SamplerParams")


@pytest.mark.parametrize("bad, message", [
    ({"token_select": "max"}, "token_select must be one of"),
    ({"guidance_scale": 1.0}, "guidance_scale must be > 1"),
    ({"sfg_start_step": -1}, "sfg_start_step must be >= 0"),
    ({"num_inference_steps": 0}, "at least 1"),
])
def test_settings_validate_everywhere(bad, message, tiny_sfg):
    with pytest.raises(ValueError, match=message):
        SamplerParams(**bad)
    with pytest.raises(ValueError, match=message):
        GenerationSettings(**bad)
    with pytest.raises(ValueError, match=message):  # the pipeline checks through the same class
        tiny_sfg("a cat", **({"num_inference_steps": 2} | bad))
    if "token_select" in bad:
        with pytest.raises(ValueError, match=message):
            SFGControl(token_select=bad["token_select"])


def test_generate_cli_reports_bad_settings_clearly(tmp_path, tiny_model_dir):
    from click.testing import CliRunner

    (tmp_path / "p.txt").write_text("a cat\n")
    res = CliRunner().invoke(generate_cmd, ["--prompts", str(tmp_path / "p.txt"), "--out", str(tmp_path / "o"),
                                            "--model", str(tiny_model_dir), "--guidance-scale", "1"])
    assert res.exit_code == 1 and "guidance_scale must be > 1" in res.output


def test_apply_guidance_is_the_papers_formula():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    # cfg rows [eps_u | eps_c]; sfg rows [eps_c | eps_bar]
    torch.testing.assert_close(apply_guidance(torch.cat([a, b]), "cfg", 7.5), a + 7.5 * (b - a))
    torch.testing.assert_close(apply_guidance(torch.cat([b, a]), "sfg", 3.0), a + 3.0 * (b - a))
    torch.testing.assert_close(apply_guidance(torch.cat([a, b]), "cfg", 1.0), b)


def test_one_device_resolver():
    assert resolve_device("auto").type in ("cpu", "cuda") and resolve_device(None) == resolve_device("auto")
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(DeviceError, match="use auto, cpu"):
        resolve_device("tpu9")
    with pytest.raises(DeviceError, match="dtype"):
        resolve_dtype("float8", torch.device("cpu"))
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    import sampler.clip

    assert not hasattr(sampler.clip, "pick_device") and gen_mod.resolve_device is resolve_device


def test_one_file_hasher(tmp_path):
    import sampler.prompt_embeddings as pe
    from app.studies import importer

    f = tmp_path / "x.bin"
    f.write_bytes(b"abc" * 1000)
    assert sha256_file(f) == hashlib.sha256(f.read_bytes()).hexdigest()
    assert not hasattr(pe, "sha256_of")
    assert "sha256_file" in inspect.getsource(importer.manifest_sha256)


def test_a_folder_made_with_other_settings_is_refused_before_the_model_loads(tmp_path, tiny_sfg, tiny_model_dir, monkeypatch):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\na dog\n")
    fast = GenerationSettings(num_inference_steps=2)
    generate_pairs(prompts, tmp_path / "out", model_dir=tiny_model_dir, settings=fast, pipeline=tiny_sfg, progress=False,
                   limit=1)
    monkeypatch.setattr(gen_mod, "load_pipeline", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(GenerateError, match="different treatment"):
        generate_pairs(prompts, tmp_path / "out", model_dir=tiny_model_dir, settings=GenerationSettings(num_inference_steps=2, sfg_scale=4.0),
                       progress=False)
    # The signature read from the folder's config files is the loaded pipeline's: a rerun with the
    # same settings and no pipeline passes the check (and only then loads the model).
    with pytest.raises(pytest.fail.Exception, match="the model was loaded"):
        generate_pairs(prompts, tmp_path / "out", model_dir=tiny_model_dir, settings=fast, progress=False)
    # Everything already made: nothing to load at all.
    summary = generate_pairs(prompts, tmp_path / "out", model_dir=tiny_model_dir, settings=fast, progress=False, limit=1)
    assert (summary.skipped, summary.written) == (1, 0)


def test_reuse_copies_matching_pairs_and_generates_the_rest(tmp_path, tiny_sfg, tiny_model_dir):
    from sampler.manifest import validate_folder

    fast = GenerationSettings(num_inference_steps=2)
    src = tmp_path / "p.csv"
    src.write_text("prompt_id,prompt,seed\na,a cat,40\nb,a dog,50\n")
    generate_pairs(src, tmp_path / "5k", model_dir=tiny_model_dir, settings=fast, pipeline=tiny_sfg, progress=False)
    strata = tmp_path / "s.csv"
    strata.write_text("prompt_id,prompt,stratum,seed\nb,a dog,low,50\n")
    summary = generate_pairs(strata, tmp_path / "human", model_dir=tiny_model_dir, settings=fast, pipeline=tiny_sfg,
                             progress=False, seeds_per_prompt=2, reuse_from=tmp_path / "5k")
    assert (summary.written, summary.reused) == (2, 1)
    old = {r.pair_key: r for r in validate_folder(tmp_path / "5k")}
    new = {r.pair_key: r for r in validate_folder(tmp_path / "human")}
    assert set(new) == {"b:50", "b:51"} and new["b:50"].stratum == "low"
    assert new["b:50"].baseline.sha256 == old["b:50"].baseline.sha256 and new["b:50"].baseline.file != old["b:50"].baseline.file
    assert new["b:50"].model_dump()["reused_from"]["folder"] == str((tmp_path / "5k").resolve())
    # Other settings: nothing is reused, every pair is generated.
    other = GenerationSettings(num_inference_steps=2, sfg_scale=4.0)
    summary = generate_pairs(strata, tmp_path / "human2", model_dir=tiny_model_dir, settings=other, pipeline=tiny_sfg,
                             progress=False, reuse_from=tmp_path / "5k")
    assert (summary.written, summary.reused) == (1, 0)
    with pytest.raises(GenerateError, match="expects a folder written by `sfgeval generate`"):
        generate_pairs(strata, tmp_path / "human3", model_dir=tiny_model_dir, settings=fast, pipeline=tiny_sfg,
                       progress=False, reuse_from=strata)
