"""The one error family of the training library: a configuration or data it cannot train on, with a message
that says what to change. Anything else raised from here is a bug."""


class ConfigError(ValueError):
    """This configuration (or this data) cannot be trained; the message says what to change."""
