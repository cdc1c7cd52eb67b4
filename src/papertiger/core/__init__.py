"""The pure core: no I/O, no processes, no clocks but the one a caller passes in.

=================  ============================================================
:mod:`.state`      the state machine: tables, namespaced partitions, indexes
:mod:`.layered`    the same answers from a base image plus an overlay of effects
:mod:`.records`    records on the client's side: validation, ids, packing
:mod:`.resolve`    requests into effects, in the manager: strict writes, batches
:mod:`.pagination` Stripe's list semantics: cursors, filters, page selection
=================  ============================================================

Every backend builds on these; the shared-memory engine runs
:mod:`.layered` (a checkpoint read in place, plus the effects logged since)
in the manager and in every reader, with the effects of :mod:`.state`.
"""
