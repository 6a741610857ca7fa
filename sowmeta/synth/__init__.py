"""The synthesis engine: class-conditional model inversion."""
