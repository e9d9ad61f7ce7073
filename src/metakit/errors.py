"""The one exception type metakit raises for mistakes a user can make."""


class MetakitError(ValueError):
    """A bad shape, name, config value or data file; the message says what was expected."""


class TrainingDiverged(MetakitError):
    """A training quantity became NaN or infinite; the runner stops and keeps the last good
    checkpoint, naming the iteration."""
