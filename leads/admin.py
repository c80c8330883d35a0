"""leads: admin (layout in ../shared/STYLE.md)."""
