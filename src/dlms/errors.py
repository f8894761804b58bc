"""User-facing errors.

Every error a user can cause (bad data, bad config, bad checkpoint, a diverged run) is a
`DlmsError`. The command line prints its message as one line and exits non-zero; the message
names the problem and the fix.
"""


class DlmsError(Exception):
    """An error caused by the user's input; the message says what is wrong and how to fix it."""


class ConfigError(DlmsError):
    """Unknown config key, wrong type, or an invalid value."""


class DataError(DlmsError):
    """Missing, empty, binary or malformed data."""


class CheckpointError(DlmsError):
    """A missing, damaged or incompatible checkpoint."""


class TrainingDiverged(DlmsError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""
