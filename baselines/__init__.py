"""The methods DSN compares against, one sub-package each, written in this project from their papers."""
