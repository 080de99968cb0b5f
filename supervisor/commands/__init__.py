"""One module per CLI verb (start, stop, status, restart); each has ``run(...) -> exit code``."""
