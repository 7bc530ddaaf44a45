"""The sending engine: throttle, SMTP sender, per-task workers and the service facade."""
