"""The process and its devices: the data mesh, the compile cache, the allocator, the
machine class (the float32 bits a run reproduces)."""
