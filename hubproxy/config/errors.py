"""The one error every config module raises."""


class ConfigError(ValueError):
    """config.toml or a value meant for it is wrong; the message says what and where."""
