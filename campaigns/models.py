"""campaigns: models (layout in ../shared/STYLE.md)."""
