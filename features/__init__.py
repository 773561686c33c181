"""Point-in-time features: sources, validation, canonical views, the feature sets, the engines.

Importing this package (which ``pipeline`` does first) tunes DuckDB's memory allocator before DuckDB
loads: its jemalloc gives freed pages back to the system after 30 ms instead of 10 s, so memory
one stage frees (a validation sort, a feature query's hash tables) is not still counted while the
next stage allocates. In the 50M-event feature benchmark (fresh processes, alternating, one
morning, 2026-12-02), 22 runs at 30 ms peaked at 1.42-1.49 x 10^9 bytes, 26 runs at 300 ms (the
setting before) at 1.42-1.67 (five above 1.5), 3 at 1 s at 1.52-1.58; with the default 10 s, an
earlier version peaked at 1.57-1.71. 30 ms took 0.6-3.2 % longer than 300 ms (medians of three
batches), and ``dynseg score`` on 1M customers was no slower. Purging at once (0 ms) peaked at
1.38-1.39 but took 21 s instead of 15 (a page fault for every page taken again). bench/README.md
has the table; a later benchmark run at 30 ms still had one run at 1.54, so the tail is shorter,
not gone. The setting only counts if it is made before DuckDB loads, and a value already in the
environment is kept.
"""

import os

os.environ.setdefault("DUCKDB_JE_MALLOC_CONF", "dirty_decay_ms:30,muzzy_decay_ms:0")
