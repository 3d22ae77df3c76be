"""dsn-bench: a benchmark and reproduction harness for DSN (ICCV 2021) and its baselines."""

__version__ = "0.1.0"
