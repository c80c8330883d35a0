"""integrations: models (layout in ../shared/STYLE.md)."""
