"""Jobs, configuration, the CLI; see the README."""

import features  # noqa: F401  (first: it tunes DuckDB's allocator before DuckDB loads)
