"""Sampler commands of `sfgeval`: torch and diffusers are imported inside each command only."""

from __future__ import annotations

import click


@click.command()
def generate() -> None:
    """Generate paired CFG/SFG images and a manifest (foundation issue)."""
    raise click.ClickException("not implemented yet")
