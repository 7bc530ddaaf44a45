"""AutoMail: throttled, durable mass e-mail sending for small offices."""

__version__ = "0.1.0"
APP_NAME = "AutoMail"
