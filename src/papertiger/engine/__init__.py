"""The shared-memory engine: one writer, a replicated log, readers that never ask.

=====================  ==========================================================
:mod:`.protocol`       request and reply frames, built and read by name
:mod:`.shm`            shared-memory segments with an explicit owner
:mod:`.log`            the control block, log segments and checkpoints
:mod:`.layout`         the checkpoint image: the store indexed, read in place
:mod:`.layout_writer`  writing images: unchanged partitions copied whole
:mod:`.replica`        a reader's view: the newest image plus the log since
:mod:`.client`         one process's connection to the manager
:mod:`.manager`        the one writer: requests in arrival order, effects out
:mod:`.claims`         ``once`` claims: who runs a factory, who waits
:mod:`.spawn`          starting managers: owned, or on demand for a test run
:mod:`.connection`     which manager this process uses: discovery, serve
:mod:`.persistence`    a daemon's snapshots on disk
=====================  ==========================================================

The backend seam (:mod:`papertiger.backends`) puts this engine behind the
same interface as Redis.
"""
