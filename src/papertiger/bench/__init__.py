"""The benchmark harness: papertiger against its physical floors and its peers.

``papertiger bench`` (:mod:`.cli`) runs it; ``benchmarks/README.md`` says
what it measures and how to read it.  The modules, each with one job:

=================  ==========================================================
:mod:`.plan`       the presets (quick, default, full) and their knobs
:mod:`.records`    the varied 4 KB checkout sessions, made fast
:mod:`.floors`     the least work each operation could do (dict + msgpack,
                   SortedList page, AF_UNIX round trip)
:mod:`.peers`      multiprocessing.Manager().dict() and a private Redis
:mod:`.timing`     calibrated, interleaved samples; medians through pyperf
:mod:`.workloads`  the measuring worker: seeding and every timed case
:mod:`.memory`     a replica's resident memory, probed in a fresh process
:mod:`.scaling`    read throughput with 1, 2 and N reader processes
:mod:`.writers`    write throughput with 1, 2, 4 and 8 writer processes
:mod:`.readers`    a new process's first read; the memory of N readers
:mod:`.runner`     the main process: owns every process and file of a run
:mod:`.report`     ratios, targets, tables, JSON
:mod:`.chart`      the PNG
=================  ==========================================================
"""
