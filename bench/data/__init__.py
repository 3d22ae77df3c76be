"""Datasets: manifests with checksums, and the code that prepares and reads them."""
