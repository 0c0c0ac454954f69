"""The Transformer LM, its loss and its costs."""
