"""``python -m papertiger.engine``: run a manager process (see :mod:`.manager`)."""

from .manager import main

main()
