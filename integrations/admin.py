"""integrations: admin (layout in ../shared/STYLE.md)."""
