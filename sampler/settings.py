"""`GenerationSettings`: the guidance parameters of a run plus its image size.

Its own module so that `sampler.generate` (which runs a request) and `sampler.signature` (which
records what a run's images share) both import it and neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from sampler.params import SamplerParams


@dataclass(frozen=True)
class GenerationSettings(SamplerParams):
    """`SamplerParams` (defaults and checks of the guidance parameters) plus the image size:
    height/width None mean the model's native size (512 for SD 1.x, 64 for the tiny model)."""

    height: int | None = None
    width: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for side in (self.height, self.width):
            if side is not None and (side < 8 or side % 8):
                raise ValueError(f"height and width must be multiples of 8 (got {self.height}x{self.width})")
