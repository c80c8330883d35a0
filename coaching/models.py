"""coaching: models (layout in ../shared/STYLE.md)."""
