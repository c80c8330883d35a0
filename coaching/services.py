"""coaching: services (layout in ../shared/STYLE.md)."""
