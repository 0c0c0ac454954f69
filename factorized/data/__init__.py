"""Text to batches: corpora (plug-ins), tokenizers, the token pipeline."""
