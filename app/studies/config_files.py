"""Study config files: the one reader and writer of the YAML/JSON text that `sfgeval study create`
takes and the admin pages import and download (JSON is read as YAML, which it is)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from app.studies.config import StudyError


def parse_config_text(text: str) -> dict[str, Any]:
    """A config file's text (YAML, or JSON which is YAML) as a dict; StudyError says where it breaks."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise StudyError(f"the config is not valid YAML or JSON{where}") from None
    if not isinstance(data, dict):
        raise StudyError("the config must be a mapping of field names to values (title, pair_sets, ...)")
    return data


def read_config_file(path: Path) -> dict[str, Any]:
    """A config file from disk as a dict; StudyError names the file and the problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise StudyError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise StudyError(f"{path}: not a UTF-8 text file") from None
    try:
        return parse_config_text(text)
    except StudyError as e:
        raise StudyError(f"{path}: {e}") from None


def dump_config(config: dict[str, Any], fmt: str = "yaml") -> str:
    """A config dict as a file `sfgeval study create` reads (YAML block style, or JSON)."""
    if fmt == "json":
        return json.dumps(config, indent=2, ensure_ascii=False) + "\n"
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=100)
