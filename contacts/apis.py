"""contacts: apis (layout in ../shared/STYLE.md)."""
