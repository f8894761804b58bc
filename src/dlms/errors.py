"""User-facing errors.

Every error a user can cause (bad data, bad config, bad checkpoint, a diverged run) is a
`DlmsError`. The command line prints its message as one line and exits non-zero; the message
names the problem and the fix.
"""


class DlmsError(Exception):
    """An error caused by the user's input; the message says what is wrong and how to fix it.

    The message speaks the Python API's words (arguments, config keys); `cli`, when given, is
    the same message in the command line's words (flags), which the `dlms` command prints."""

    def __init__(self, message: str = "", *, cli: str | None = None):
        super().__init__(message)
        self.cli = cli

    def for_cli(self) -> str:
        return self.cli or str(self)


class ConfigError(DlmsError):
    """Unknown config key, wrong type, or an invalid value."""


class DataError(DlmsError):
    """Missing, empty, binary or malformed data."""


class CheckpointError(DlmsError):
    """A missing, damaged or incompatible checkpoint."""


class TrainingDiverged(DlmsError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


class ArgumentError(DlmsError):
    """A value given to a function (or a command) that is out of range or does not fit.

    The message names the value by its Python argument (`length`); the command line shows the
    same message with its flag (`--seq_len`) through `renamed`. `template` holds `{arg}`-style
    placeholders, `names` maps each to the argument's name.
    """

    def __init__(self, template: str, **names: str):
        self.template = template
        self.names = names
        super().__init__(template.format(**names))

    def renamed(self, rename) -> str:
        """The message with every argument name passed through `rename(name) -> shown name`."""
        return self.template.format(**{key: rename(name) for key, name in self.names.items()})


def literal(text: object) -> str:
    """`text` safe to embed in an ArgumentError template (braces doubled)."""
    return str(text).replace("{", "{{").replace("}", "}}")
