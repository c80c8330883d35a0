"""scheduling: models (layout in ../shared/STYLE.md)."""
