"""The manifest contract: validation names the line and the problem; tampering is caught."""

import hashlib
import json
from pathlib import Path

import pytest

from sampler.manifest import ManifestError, PairRecord, validate_folder


def _write_pair_set(folder: Path, n: int = 2) -> list[dict]:
    records = []
    for i in range(n):
        files = {}
        for arm in ("cfg", "sfg"):
            name = hashlib.md5(f"{i}{arm}".encode()).hexdigest() + ".png"
            data = f"image {i} {arm}".encode()
            (folder / name).write_bytes(data)
            files[arm] = {"arm": arm, "file": name, "sha256": hashlib.sha256(data).hexdigest()}
        records.append({
            "schema": "sfgeval.pair/1", "pair_key": f"p{i}:0", "prompt_id": f"p{i}",
            "prompt": f"prompt {i}", "seed": 0, "baseline": files["cfg"], "treatment": files["sfg"],
            "params": {"num_inference_steps": 4}, "model": {"name_or_path": "tiny"},
        })
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def test_valid_folder_round_trips(tmp_path):
    records = _write_pair_set(tmp_path)
    parsed = validate_folder(tmp_path)
    assert [r.pair_key for r in parsed] == [r["pair_key"] for r in records]
    again = PairRecord.model_validate(json.loads(parsed[0].to_json()))
    assert again == parsed[0]


def test_tampered_image_is_named(tmp_path):
    records = _write_pair_set(tmp_path)
    (tmp_path / records[1]["treatment"]["file"]).write_bytes(b"changed")
    with pytest.raises(ManifestError, match=r"manifest.jsonl:2: image .* does not match its sha256"):
        validate_folder(tmp_path)


def test_malformed_line_is_named(tmp_path):
    _write_pair_set(tmp_path)
    with open(tmp_path / "manifest.jsonl", "a") as f:
        f.write('{"schema": "sfgeval.pair/1", "prompt": \n')
    with pytest.raises(ManifestError, match=r"manifest.jsonl:3: not valid JSON"):
        validate_folder(tmp_path)


def test_arm_revealing_file_name_rejected(tmp_path):
    records = _write_pair_set(tmp_path, 1)
    records[0]["treatment"]["file"] = "sfg_0001.png"
    (tmp_path / "manifest.jsonl").write_text(json.dumps(records[0]) + "\n")
    with pytest.raises(ManifestError, match=r":1: field 'treatment.file'.*opaque"):
        validate_folder(tmp_path)


def test_repeated_pair_key_rejected(tmp_path):
    records = _write_pair_set(tmp_path, 1)
    line = json.dumps(records[0]) + "\n"
    (tmp_path / "manifest.jsonl").write_text(line + line)
    with pytest.raises(ManifestError, match=r":2: pair_key 'p0:0' repeats line 1"):
        validate_folder(tmp_path)


def test_empty_manifest_rejected(tmp_path):
    (tmp_path / "manifest.jsonl").write_text("\n")
    with pytest.raises(ManifestError, match="holds no pairs"):
        validate_folder(tmp_path)
