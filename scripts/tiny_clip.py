"""Write a tiny random-weight open_clip model (architecture config + weights) for trying the
pipeline on a CPU: `python3 scripts/tiny_clip.py tiny-clip/` writes tiny-clip/tiny-clip.json and
tiny-clip/tiny-clip.pt, to pass as `--clip-config` and `--clip-weights`. Its numbers mean nothing;
the commands run end to end in minutes. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write tiny-clip.json and tiny-clip.pt into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import open_clip
    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    config = args.out / "tiny-clip.json"
    config.write_text(json.dumps(CONFIG))
    open_clip.add_model_config(config)
    torch.manual_seed(args.seed)
    model = open_clip.create_model("tiny-clip", pretrained=None)
    torch.save(model.state_dict(), args.out / "tiny-clip.pt")
    print(config)
    print(args.out / "tiny-clip.pt")


if __name__ == "__main__":
    main()
