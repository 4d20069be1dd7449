"""What the router raises."""


class RouterError(Exception):
    """nginx refused a change, or could not be reached, (re)started or configured."""
