"""Teacher models for distillation (filled in by the teacher stage)."""
