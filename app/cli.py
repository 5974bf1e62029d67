"""The `sfgeval` command line: one entry point for the sampler (GPU side) and the app.

Sampler commands are imported from `sampler.cli`, which imports torch only inside commands.
"""

from __future__ import annotations

import click

from sampler.cli import generate
from sampler.cli import metrics, prompts


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Blind human evaluation of segmentation-free guidance against classifier-free guidance."""


main.add_command(generate)
main.add_command(prompts)
main.add_command(metrics)

if __name__ == "__main__":
    main()
