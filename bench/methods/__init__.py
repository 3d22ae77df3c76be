"""Method base class and the built-in special methods."""
