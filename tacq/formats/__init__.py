"""Layer 3, the number format: the grid a layer is quantized on (codes, scale, zero), bit
packing, the packed Linear a variant holds, export / load, and honest sizes in bytes."""
