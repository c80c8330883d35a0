"""leads: tasks (layout in ../shared/STYLE.md)."""
