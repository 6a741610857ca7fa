"""The ``sowmeta`` command line: one thin command per library function."""
