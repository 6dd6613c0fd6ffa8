"""Reading and writing rasters and vectors on the element grid."""
