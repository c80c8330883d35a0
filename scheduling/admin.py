"""scheduling: admin (layout in ../shared/STYLE.md)."""
