"""Exceptions whose message is meant for the user (printed as one line by the CLI)."""


class UserError(Exception):
    """An error the user can fix: bad input file, bad config, missing model dir."""


class DataError(UserError):
    """Unreadable, empty or inconsistent data; the message names the utterance and/or file."""
