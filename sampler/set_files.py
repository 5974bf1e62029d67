"""Writing an image-set folder (`sfgeval.set/1`) safely, one line per prompt and seed.

Images are written as in a pair set (`sampler.pair_files.write_file`: opaque names, temp file,
fsync, rename) before their line. A new prompt and seed is appended; arms added later to an
existing line (a second run with more arms) replace that line: the manifest is rewritten to a
temporary file and renamed over the old one, under the folder's lock, so a reader sees the old or
the new manifest, never half of one. An arm that another run wrote meanwhile is kept as that run
wrote it and this run's copy of its image is removed.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from sampler.manifest import MANIFEST_NAME, SetRecord
from sampler.pair_files import append_line


class SetWriter:
    """Adds set/1 records to OUT/manifest.jsonl under OUT/.manifest.lock."""

    def __init__(self, out_dir: Path):
        from filelock import FileLock

        self.out_dir = Path(out_dir)
        self.path = self.out_dir / MANIFEST_NAME
        self.lock = FileLock(str(self.out_dir / ".manifest.lock"))

    def put(self, line: dict) -> list[str]:
        """Add the arms of `line` (a set/1 record as a dict, its `images` possibly only the arms
        this run made) to its prompt and seed's line, a new line when the key is new; return
        the arms added (the others were there already: this run's files of them are removed)."""
        with self.lock:
            lines = self.path.read_text(encoding="utf-8").splitlines() if self.path.is_file() else []
            for n, text in enumerate(lines):
                if text.strip() and json.loads(text).get("pair_key") == line["pair_key"]:
                    break
            else:
                append_line(self.path, SetRecord.model_validate(line).to_json())
                return list(line["images"])
            old = json.loads(lines[n])
            added = [a for a in line["images"] if a not in old["images"]]
            for arm, image in line["images"].items():
                if arm not in added:
                    (self.out_dir / image["file"]).unlink(missing_ok=True)
            if added:
                old["images"].update({a: line["images"][a] for a in added})
                old["shared_steps"] = old.get("shared_steps", []) + line.get("shared_steps", [])
                lines[n] = SetRecord.model_validate(old).to_json()
                self._replace(lines)
            return added

    def _replace(self, lines: list[str]) -> None:
        tmp = self.out_dir / f".tmp-{secrets.token_hex(8)}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines if line.strip()))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
