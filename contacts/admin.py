"""contacts: admin (layout in ../shared/STYLE.md)."""
