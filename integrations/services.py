"""integrations: services (layout in ../shared/STYLE.md)."""
