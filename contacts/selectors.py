"""contacts: selectors (layout in ../shared/STYLE.md)."""
