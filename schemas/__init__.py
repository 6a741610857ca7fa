"""JSON Schemas of sowmeta's file formats (installed as ``sowmeta.schemas``)."""
