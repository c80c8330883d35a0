"""contacts: services (layout in ../shared/STYLE.md)."""
