"""Training: the loop, the pure steps, exact evaluation, and a run's files."""
