"""`python -m ecolink`: the same as the `ecolink` command."""

from ecolink.cli import main

raise SystemExit(main())
