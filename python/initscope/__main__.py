"""``python -m initscope`` is the ``initscope`` command."""

import sys

from .cli import main

sys.exit(main())
