"""ppodd: Progressive Poster Dataset Distillation (P-PoDD) and PoDD as a batch tool."""

__version__ = "0.2.0"
