"""`python -m ecotui`: the same as the `ecotui` command."""

import sys

from ecotui.cli import main

sys.exit(main())
