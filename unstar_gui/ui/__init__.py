"""The desktop app (PySide6). Qt only: no ML logic, and never an import of mlx."""
