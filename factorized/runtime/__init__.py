"""The process and its devices: the data mesh, the compile cache, the allocator."""
