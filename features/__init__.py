"""Point-in-time features: sources, validation, canonical views, the feature sets, the engines.

Importing this package (which ``pipeline`` does first) tunes DuckDB's memory allocator before DuckDB
loads: its jemalloc gives freed pages back to the system after 0.3 s instead of 10 s, so memory
one stage frees (a validation sort, a feature query's hash tables) is not still counted while the
next stage allocates. In the 50M-event feature benchmark, 14 single runs with it peaked at
1.45-1.70 x 10^9 bytes (median 1.48), 3 without it at 1.57-1.71, at the same speed. The setting
only counts if it is made before DuckDB loads, and a value already in the environment is kept.
"""

import os

os.environ.setdefault("DUCKDB_JE_MALLOC_CONF", "dirty_decay_ms:300,muzzy_decay_ms:0")
