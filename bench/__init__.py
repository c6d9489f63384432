"""The benchmarks: each module a script (`python bench/NAME.py`, `make bench-*`); `common` is
what they share."""
