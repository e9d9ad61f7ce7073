"""The one exception type metakit raises for mistakes a user can make."""


class MetakitError(ValueError):
    """A bad shape, name, config value or data file; the message says what was expected."""
