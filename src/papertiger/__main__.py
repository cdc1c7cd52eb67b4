"""``python -m papertiger``: the same as the ``papertiger`` command."""

import sys

from .cli import main

sys.exit(main())
