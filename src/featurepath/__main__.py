"""``python -m featurepath`` = the ``featurepath`` command."""

from featurepath.cli import entry

entry()
