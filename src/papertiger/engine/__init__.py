"""The I/O side: shared-memory log, manager, replica, client, and discovery.

``protocol`` (frames), ``shm`` (segments), ``log`` (control block, log
segments, checkpoints), ``replica`` (a reader's state), ``manager`` (the one
writer), ``client`` (a process's connection), ``server`` (serve, connect and
discovery).
"""
