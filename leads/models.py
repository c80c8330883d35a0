"""leads: models (layout in ../shared/STYLE.md)."""
