"""I/O adapters: FITS files, the SQLite catalog, the folder watcher, previews."""
