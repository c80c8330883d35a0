"""leads: selectors (layout in ../shared/STYLE.md)."""
