"""The tool version recorded in every file sowmeta writes."""

__version__ = "0.1.0"
