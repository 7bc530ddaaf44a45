"""Desktop integration of the built app: install, menu entries, start at login, uninstall (one module per platform)."""
