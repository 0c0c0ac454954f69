"""Jobs on a saved run: evaluation, post-hoc SVD compression."""
