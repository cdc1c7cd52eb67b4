"""``python -m papertiger.daemon``: the detached daemon process (see :mod:`.run`)."""

from .run import main

main()
