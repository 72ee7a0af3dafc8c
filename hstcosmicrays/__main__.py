"""``python -m hstcosmicrays``: the same as the ``hstcosmicrays`` command."""

import sys

from .cli import main

sys.exit(main())
