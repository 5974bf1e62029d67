"""The pair generator: manifest schema, opaque files without metadata, resume after a kill,
sharding, CLI errors."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

import sampler.generate as gen_mod  # noqa: E402
from sampler.cli import generate as generate_cmd  # noqa: E402
from sampler.generate import (  # noqa: E402
    GenerateError,
    GenerationSettings,
    generate_pairs,
    plan_pairs,
    shard,
)
from sampler.manifest import (  # noqa: E402
    MANIFEST_NAME,
    OPAQUE_NAME,
    PairRecord,
    iter_records,
    validate_folder,
)
from sampler.prompts import PromptRecord  # noqa: E402
from tests.pngs import png_chunk_types  # noqa: E402

FAST = GenerationSettings(num_inference_steps=4, height=64, width=64)


def prompts_csv(tmp_path, n=3):
    p = tmp_path / "prompts.csv"
    rows = ["prompt_id,prompt,stratum,clip_score"] + [f"p{i},a photo of thing {i},s{i % 2},1.0" for i in range(n)]
    p.write_text("\n".join(rows) + "\n")
    return p


def run(tmp_path, tiny_sfg, tiny_model_dir, out="out", **kw):
    return generate_pairs(
        kw.pop("prompts", None) or prompts_csv(tmp_path),
        tmp_path / out,
        model_dir=tiny_model_dir,
        settings=kw.pop("settings", FAST),
        pipeline=tiny_sfg,
        progress=False,
        **kw,
    )


def test_manifest_records_validate_and_files_reveal_nothing(tmp_path, tiny_sfg, tiny_model_dir):
    summary = run(tmp_path, tiny_sfg, tiny_model_dir, seeds_per_prompt=2, base_seed=10, batch_size=3, save_maps=True)
    assert (summary.total, summary.written, summary.skipped) == (6, 6, 0)
    out = tmp_path / "out"
    records = validate_folder(out)  # schema, unique pair keys, every image present with its sha256
    assert [r.pair_key for r in records] == ["p0:10", "p0:11", "p1:10", "p1:11", "p2:10", "p2:11"]
    for line in (out / MANIFEST_NAME).read_text().splitlines():
        PairRecord.model_validate(json.loads(line))  # strict JSON (no NaN/Infinity) and the schema
    r = records[0]
    assert (r.baseline.arm, r.treatment.arm) == ("cfg", "sfg")
    assert r.stratum == "s0" and r.prompt == "a photo of thing 0" and r.seed == 10
    assert r.treatment.params["sfg_scale"] == 10.0 and r.treatment.params["sfg_start_step"] == 2
    assert r.params["num_inference_steps"] == 4 and r.params["height"] == 64
    assert len(r.model["fingerprint"]) == 64 and r.software["torch"]
    images = sorted(p for p in out.iterdir() if p.suffix == ".png")
    assert len(images) == 12
    for img in images:
        assert OPAQUE_NAME.match(img.name)
        assert set(png_chunk_types(img.read_bytes())) <= {"IHDR", "IDAT", "IEND"}, "no text/time/metadata chunks"
        assert b"cfg" not in img.read_bytes().lower() and b"sfg" not in img.read_bytes().lower()
    for rec in records:
        b, t = out / rec.baseline.file, out / rec.treatment.file
        assert b.stat().st_mtime == t.stat().st_mtime
        assert rec.map_file and (out / rec.map_file).is_file() and rec.map_file.startswith("maps/")
    assert not list(out.glob(".tmp-*"))


def test_resume_after_a_kill_mid_pair(tmp_path, tiny_sfg, tiny_model_dir, monkeypatch):
    real_write = gen_mod.write_file
    calls = {"n": 0}

    def dying_write(folder, data, suffix=".png"):
        calls["n"] += 1
        if calls["n"] == 4:  # second image of the second pair: the first image already on disk
            raise KeyboardInterrupt("killed")
        return real_write(folder, data, suffix)

    monkeypatch.setattr(gen_mod, "write_file", dying_write)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, tiny_sfg, tiny_model_dir, batch_size=2)
    out = tmp_path / "out"
    assert [r.pair_key for r in validate_folder(out)] == ["p0:0"]  # a valid manifest, one pair

    monkeypatch.setattr(gen_mod, "write_file", real_write)
    summary = run(tmp_path, tiny_sfg, tiny_model_dir, batch_size=2)
    assert (summary.total, summary.skipped, summary.written) == (3, 1, 2)
    assert [r.pair_key for r in validate_folder(out)] == ["p0:0", "p1:0", "p2:0"]
    again = run(tmp_path, tiny_sfg, tiny_model_dir)
    assert (again.skipped, again.written) == (3, 0)


def test_resume_after_a_kill_between_pairs(tmp_path, tiny_sfg, tiny_model_dir):
    class Killed(Exception):
        pass

    def kill_after_two(record):
        if record.pair_key == "p1:0":
            raise Killed

    with pytest.raises(Killed):
        run(tmp_path, tiny_sfg, tiny_model_dir, on_pair=kill_after_two)
    assert len(validate_folder(tmp_path / "out")) == 2
    summary = run(tmp_path, tiny_sfg, tiny_model_dir)
    assert (summary.skipped, summary.written) == (2, 1)


def test_resume_with_other_settings_is_refused(tmp_path, tiny_sfg, tiny_model_dir):
    run(tmp_path, tiny_sfg, tiny_model_dir, limit=1)
    before = (tmp_path / "out" / MANIFEST_NAME).read_bytes()
    other = GenerationSettings(num_inference_steps=4, height=64, width=64, sfg_scale=5.0)
    with pytest.raises(GenerateError, match="different treatment"):
        run(tmp_path, tiny_sfg, tiny_model_dir, settings=other)
    assert (tmp_path / "out" / MANIFEST_NAME).read_bytes() == before


def test_same_seed_same_images(tmp_path, tiny_sfg, tiny_model_dir):
    run(tmp_path, tiny_sfg, tiny_model_dir, out="a", limit=1)
    run(tmp_path, tiny_sfg, tiny_model_dir, out="b", limit=1)
    (ra,), (rb,) = validate_folder(tmp_path / "a"), validate_folder(tmp_path / "b")
    assert ra.baseline.sha256 == rb.baseline.sha256 and ra.treatment.sha256 == rb.treatment.sha256
    assert ra.baseline.file != rb.baseline.file  # names are random, not derived from content


@pytest.mark.parametrize("n", [0, 1, 5, 7, 8, 33])
@pytest.mark.parametrize("procs", [1, 2, 3, 4, 8])
def test_shards_cover_every_pair_once(n, procs):
    items = list(range(n))
    shares = [shard(items, procs, i) for i in range(procs)]
    assert [x for s in shares for x in s] == items  # no duplicates, no gaps, in order
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_shard_matches_accelerate_single_process():
    from accelerate import PartialState

    items = list(range(11))
    state = PartialState()
    with state.split_between_processes(items) as mine:
        assert shard(items, state.num_processes, state.process_index) == list(mine)


def test_plan_uses_file_seeds_then_base_seed():
    recs = [PromptRecord("a", "x", seed=100), PromptRecord("b", "y")]
    assert [w.pair_key for w in plan_pairs(recs, 2, base_seed=7)] == ["a:100", "a:101", "b:7", "b:8"]


def test_cli_generates_with_the_tiny_model(tmp_path, tiny_cache, monkeypatch):
    monkeypatch.setenv("SFGEVAL_CACHE", str(tiny_cache))
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\na dog\n")
    args = ["--prompts", str(prompts), "--out", str(tmp_path / "o"), "--tiny", "--steps", "3", "--batch-size", "2"]
    res = CliRunner().invoke(generate_cmd, args)
    assert res.exit_code == 0, res.output
    assert "2 pairs written" in res.output
    assert [r.pair_key for _, r in iter_records(tmp_path / "o")] == ["1:0", "2:0"]


@pytest.mark.parametrize(
    "setup, extra, message",
    [
        ("missing", [], "does not exist"),
        ("no_index", [], "no model_index.json"),
        ("bad_index", [], "not valid JSON"),
        ("parts", [], "missing component"),
        ("ok", ["--device", "tpu9"], "unknown device|unsupported device"),
        ("ok", ["--device", "cuda:7"], "CUDA"),
        ("empty_prompts", [], "holds no prompts"),
    ],
)
def test_cli_errors_are_clear(tmp_path, tiny_model_dir, setup, extra, message):
    prompts = tmp_path / "p.txt"
    prompts.write_text("" if setup == "empty_prompts" else "a cat\n")
    model = tmp_path / "model"
    if setup in ("ok", "empty_prompts"):
        model = tiny_model_dir
    elif setup != "missing":
        model.mkdir()
        if setup == "bad_index":
            (model / "model_index.json").write_text("{nope")
        if setup == "parts":
            (model / "model_index.json").write_text("{}")
    args = ["--prompts", str(prompts), "--out", str(tmp_path / "o"), "--model", str(model), "--steps", "2", *extra]
    res = CliRunner().invoke(generate_cmd, args)
    assert res.exit_code != 0
    assert "Error" in res.output and pytest.importorskip("re").search(message, res.output), res.output
    assert not (tmp_path / "o" / MANIFEST_NAME).exists()


def test_cli_needs_exactly_one_model_source(tmp_path):
    res = CliRunner().invoke(generate_cmd, ["--prompts", "x.txt", "--out", str(tmp_path)])
    assert res.exit_code != 0 and "--model DIR or --tiny" in res.output


def test_concurrent_runs_never_append_a_pair_twice(tmp_path, tiny_sfg, tiny_model_dir, monkeypatch):
    run(tmp_path, tiny_sfg, tiny_model_dir, limit=2)
    # a second process that read the manifest before the first one finished
    monkeypatch.setattr(gen_mod, "finished_pairs", lambda out_dir: {})
    summary = run(tmp_path, tiny_sfg, tiny_model_dir, limit=2)
    assert summary.written == 0
    out = tmp_path / "out"
    assert [r.pair_key for r in validate_folder(out)] == ["p0:0", "p1:0"]
    assert len(list(out.glob("*.png"))) == 4  # the duplicate's images were removed


def test_process_share_from_a_plain_torchrun_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "2")
    assert gen_mod.process_share() == (3, 2)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert gen_mod.process_share() == (1, 0)


def test_loading_in_a_dtype_does_not_warn_about_casting(tiny_model_dir, capfd):
    """diffusers warns once per model when a loaded pipeline is cast with .to(dtype); the
    pipeline is loaded in the wanted dtype instead, so `generate` and `demo --generate` stay quiet."""
    import torch

    from sampler.pipeline import SFGPipeline

    sfg = SFGPipeline.from_pretrained(tiny_model_dir, device="cpu", torch_dtype=torch.bfloat16)
    assert sfg.pipe.unet.dtype == torch.bfloat16 and sfg.pipe.vae.dtype == torch.bfloat16
    err = capfd.readouterr().err
    assert "should be kept in float32" not in err and "torch_dtype" not in err, err
