"""Sweeps: their points, resume, and the launcher (local or SLURM)."""
