"""`python -m app.cli` (and `accelerate launch -m app.cli`): the `sfgeval` command."""

from app.cli import main

main()
