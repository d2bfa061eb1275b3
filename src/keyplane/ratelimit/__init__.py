"""Rate limiting by how the caller authenticated, on limits' async storages."""
