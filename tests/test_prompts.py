"""Prompt files: .txt, .csv (incl. the shipped COCO-30K list), .jsonl; clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sampler.prompts import PromptFileError, PromptRecord, read_prompts

COCO = Path(__file__).resolve().parents[1] / "data" / "coco_30k.csv"


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_txt_one_prompt_per_line_ids_are_line_numbers(tmp_path):
    p = write(tmp_path, "p.txt", "  a cat  \n\na dog\n")
    assert read_prompts(p) == [PromptRecord("1", "a cat"), PromptRecord("3", "a dog")]


def test_csv_quoted_newlines_whitespace_ids_seeds(tmp_path):
    p = write(
        tmp_path,
        "p.csv",
        'image_id,prompt,evaluation_seed\n'
        '007," a bird,\nflying ",42\n'
        "008,a plane ,\n",
    )
    assert read_prompts(p) == [
        PromptRecord("007", "a bird,\nflying", seed=42),
        PromptRecord("008", "a plane"),
    ]


def test_csv_from_strata_keeps_stratum_and_prompt_id(tmp_path):
    # the columns `sfgeval prompts strata` writes
    p = write(tmp_path, "strata.csv", "prompt_id,prompt,stratum,clip_score\n12,a cat,low,20.5\n40,a dog,high,31.0\n")
    assert read_prompts(p) == [PromptRecord("12", "a cat", "low"), PromptRecord("40", "a dog", "high")]


def test_csv_without_id_column_uses_row_numbers(tmp_path):
    p = write(tmp_path, "p.csv", "prompt\nx\n\"y\nz\"\nw\n")
    assert [(r.prompt_id, r.prompt) for r in read_prompts(p)] == [("1", "x"), ("2", "y\nz"), ("3", "w")]


def test_jsonl(tmp_path):
    lines = [{"prompt": "a cat", "prompt_id": "c", "stratum": "mid", "seed": 3}, {"prompt": " a dog "}]
    p = write(tmp_path, "p.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert read_prompts(p) == [PromptRecord("c", "a cat", "mid", 3), PromptRecord("2", "a dog")]


def test_the_shipped_coco_30k_csv():
    recs = read_prompts(COCO)
    assert len(recs) == 30000
    assert recs[0] == PromptRecord("000000203564", "A bicycle replica with a clock as the front wheel.", seed=41337)
    assert len({r.prompt_id for r in recs}) == 30000
    assert all(r.prompt == r.prompt.strip() and r.prompt for r in recs)
    assert all(r.seed is not None for r in recs)


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("empty.txt", "\n  \n", "holds no prompts"),
        ("empty.csv", "", "holds no prompts"),
        ("header.csv", "prompt,stratum\n", "holds no prompts"),
        ("cols.csv", "caption\nx\n", "no 'prompt' column"),
        ("blank.csv", "prompt,stratum\n  ,low\n", "data row 1.*empty"),
        ("wide.csv", "prompt\n\"a\",b\n", "more cells than columns"),
        ("seed.csv", "prompt,seed\na,x1\n", "not an integer"),
        ("dup.csv", "prompt_id,prompt\n1,a\n1,b\n", "appears twice"),
        ("bad.jsonl", '{"prompt": "a"}\n{"prompt": \n', "line 2: not valid JSON"),
        ("list.jsonl", '["a"]\n', "JSON object"),
        ("noprompt.jsonl", '{"text": "a"}\n', "no 'prompt' field"),
        ("p.yaml", "- a\n", "unknown prompt file type"),
    ],
)
def test_bad_files_get_clear_errors(tmp_path, name, text, message):
    with pytest.raises(PromptFileError, match=message):
        read_prompts(write(tmp_path, name, text))


def test_missing_file(tmp_path):
    with pytest.raises(PromptFileError, match="no such prompt file"):
        read_prompts(tmp_path / "nope.txt")
