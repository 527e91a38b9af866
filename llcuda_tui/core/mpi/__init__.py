"""MPI: one engine per GPU, across nodes (``llcuda batch --mpi``, ``llcuda serve --mpi``).

``devices`` (each rank's GPUs, from its node-local rank), ``jobs`` (batch input and
crash-safe, resumable output), ``batch`` (ranks pull prompts from rank 0), ``pool`` (rank 0
serves HTTP and schedules requests onto every rank's engine), ``launch`` (finding ``mpiexec``).
``mpi4py`` is imported lazily: without ``--mpi`` nothing here needs it. No Textual.
"""
