"""leads: apis (layout in ../shared/STYLE.md)."""
