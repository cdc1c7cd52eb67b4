"""``python -m papertiger.http``: the HTTP server as a process of its own (see :mod:`.server`)."""

from .server import main

main()
