"""edgenode: a local-first edge database node over libSQL."""

__version__ = "0.1.0"
