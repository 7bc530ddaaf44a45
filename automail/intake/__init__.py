"""How messages get in: mail merge, data files, the pickup folder."""
