"""contacts: models (layout in ../shared/STYLE.md)."""
