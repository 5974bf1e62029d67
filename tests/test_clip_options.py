"""Any open_clip architecture from the command line, early errors with hints, resumable encoding."""

from __future__ import annotations

import csv
import json
import re
import time

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("open_clip")

from app.cli import main  # noqa: E402
from tests.tiny_metric_models import TINY_CLIP_CONFIG, save_tiny_clip, write_tiny_manifest  # noqa: E402

PROMPTS = [f"a photo of {n} {thing}" for n in ("one", "two", "three") for thing in ("cats", "dogs", "buses", "kites")]


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def custom_clip(tmp_path_factory):
    """A config file of an architecture open_clip has never heard of, and a checkpoint of it."""
    import open_clip

    d = tmp_path_factory.mktemp("custom-clip")
    cfg = d / "my-finetuned-clip.json"
    cfg.write_text(json.dumps(TINY_CLIP_CONFIG))
    assert "my-finetuned-clip" not in open_clip.list_models()
    # Build the checkpoint from a private copy registered under another name, so the name above
    # stays unknown until the command line registers it.
    other = d / "builder" / "builder-clip.json"
    other.parent.mkdir()
    other.write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(other)
    return {"config": cfg, "weights": save_tiny_clip(d / "w.pt", seed=5, name="builder-clip"), "dir": d}


@pytest.fixture()
def prompt_csv(tmp_path):
    path = tmp_path / "prompts.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt_id", "prompt"])
        w.writerows([i, p] for i, p in enumerate(PROMPTS))
    return path


def test_clip_config_file_and_local_dir(custom_clip, prompt_csv, tmp_path):
    import open_clip
    import torch

    from sampler.clip import encode_texts, load_open_clip

    out = tmp_path / "e.npz"
    res = _run("prompts", "encode", "--prompts", prompt_csv, "--clip-config", custom_clip["config"],
               "--clip-weights", custom_clip["weights"], "--out", out, "--device", "cpu")
    assert res.exit_code == 0, res.output
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["model"]["model"] == "my-finetuned-clip" and meta["model"]["config"]["embed_dim"] == 32
    with np.load(out) as data:
        emb = data["embeddings"]
    direct = encode_texts(load_open_clip("builder-clip", custom_clip["weights"], "cpu"), PROMPTS[:2], progress=False)
    np.testing.assert_allclose(emb[:2], direct, atol=1e-5)

    # open_clip's local-dir: form: a folder with open_clip_config.json and the checkpoint.
    folder = tmp_path / "local"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CONFIG}))
    torch.save(torch.load(custom_clip["weights"], weights_only=True), folder / "open_clip_pytorch_model.bin")
    out2 = tmp_path / "e2.npz"
    res = _run("prompts", "encode", "--prompts", prompt_csv, "--clip-model", f"local-dir:{folder}", "--out", out2,
               "--device", "cpu")
    assert res.exit_code == 0, res.output
    with np.load(out2) as data:
        np.testing.assert_allclose(data["embeddings"], emb, atol=1e-5)

    # The same options work for the metrics table.
    pairs = write_tiny_manifest(tmp_path / "pairs", [(f"p{i}", PROMPTS[i]) for i in range(3)], size=32)
    res = _run("metrics", "table", "--manifest", pairs, "--clip-model", f"local-dir:{folder}", "--out", tmp_path / "m",
               "--device", "cpu")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(tmp_path / "m" / "metrics.csv")))
    assert [r["arm"] for r in rows] == ["cfg", "sfg"] and all(r["clip_score"] for r in rows)
    res = _run("metrics", "table", "--manifest", pairs, "--clip-config", custom_clip["config"], "--clip-weights",
               custom_clip["weights"], "--out", tmp_path / "m2", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert open_clip.list_models().count("my-finetuned-clip") == 1


def test_a_checkpoint_of_another_architecture_fails_in_seconds_with_a_hint(custom_clip, prompt_csv, tmp_path, monkeypatch):
    import open_clip

    monkeypatch.setattr(open_clip, "create_model_and_transforms",
                        lambda *a, **k: pytest.fail("a model was built for a checkpoint that cannot fit it"))
    start = time.perf_counter()
    res = _run("prompts", "encode", "--prompts", prompt_csv, "--clip-weights", custom_clip["weights"],
               "--out", tmp_path / "e.npz", "--device", "cpu")  # default ViT-g-14
    assert time.perf_counter() - start < 30
    assert res.exit_code == 1
    assert "is not an open_clip ViT-g-14 checkpoint" in res.output and "embed_dim 32 (expected 1024)" in res.output
    assert re.search(r"did you mean --clip-model [\w-]*clip", res.output), res.output
    # A real architecture is recognised from its tensor shapes (built on the meta device: no memory).
    import torch

    from sampler.clip_checkpoint import ClipSpec, check_checkpoint, matching_architectures, shape_summary
    from sampler.weights import WeightsError

    with torch.device("meta"):
        vit = open_clip.create_model("ViT-B-32", device="meta")
    assert "ViT-B-32" in matching_architectures(shape_summary({k: tuple(v.shape) for k, v in vit.state_dict().items()}))
    with pytest.raises(WeightsError, match="did you mean"):
        check_checkpoint(ClipSpec("ViT-L-14", open_clip.get_model_config("ViT-L-14"), custom_clip["weights"]))


def test_encode_resumes_a_killed_run(custom_clip, prompt_csv, tmp_path, monkeypatch):
    import sampler.clip

    out = tmp_path / "e.npz"
    args = ("prompts", "encode", "--prompts", prompt_csv, "--clip-config", custom_clip["config"], "--clip-weights",
            custom_clip["weights"], "--out", out, "--device", "cpu", "--chunk", 5)
    real = sampler.clip.encode_texts
    seen: list[str] = []

    def dies_on_the_third_chunk(clip, texts, **kw):
        if len(seen) >= 10:
            raise KeyboardInterrupt("killed")
        seen.extend(texts)
        return real(clip, texts, **kw)

    monkeypatch.setattr(sampler.clip, "encode_texts", dies_on_the_third_chunk)
    res = _run(*args)
    assert res.exit_code != 0 and not out.exists() and seen == PROMPTS[:10]
    seen.clear()

    def counts(clip, texts, **kw):
        seen.extend(texts)
        return real(clip, texts, **kw)

    monkeypatch.setattr(sampler.clip, "encode_texts", counts)
    res = _run(*args)
    assert res.exit_code == 0, res.output
    assert seen == PROMPTS[10:]  # only the unfinished chunk was encoded again
    with np.load(out) as data:
        resumed = data["embeddings"]
    assert not (tmp_path / "e.npz.partial").exists()
    out.unlink()
    out.with_suffix(".json").unlink()
    assert _run(*args).exit_code == 0
    with np.load(out) as data:
        np.testing.assert_allclose(resumed, data["embeddings"], atol=1e-6)


def test_strata_pointed_at_a_csv_says_what_it_expects(tmp_path, prompt_csv, custom_clip):
    res = _run("prompts", "strata", "--manifest", prompt_csv, "--clip-config", custom_clip["config"],
               "--clip-weights", custom_clip["weights"], "--out", tmp_path / "s.csv")
    assert res.exit_code == 1 and "expects the folder written by `sfgeval generate`" in res.output
    assert "no manifest.jsonl in this folder" not in res.output


def test_diversity_progress_shows_whole_sizes(tmp_path, capsys):
    from sampler.diversity import run_diversity
    from sampler.prompt_embeddings import PromptTable, save_embeddings

    n = 10_000
    emb = np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)
    table = PromptTable([str(i) for i in range(n)], ["x"] * n, [None] * n, "0" * 64, "p.csv")
    save_embeddings(tmp_path / "e.npz", emb, {"model": "test"}, table)
    result = run_diversity(tmp_path / "e.npz", [10_000], 1, 0, 1e-6, tmp_path / "div")
    assert result.computed == 1 and [r.size for r in result.rows] == [10_000]
    err = capsys.readouterr().err
    assert "size=10000" in err and "1e+4" not in err
