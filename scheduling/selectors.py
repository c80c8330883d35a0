"""scheduling: selectors (layout in ../shared/STYLE.md)."""
