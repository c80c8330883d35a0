"""scheduling: apis (layout in ../shared/STYLE.md)."""
