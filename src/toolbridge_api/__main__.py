"""``python -m toolbridge_api``: the ``toolbridge-api`` command line."""

from toolbridge_api.cli import app

app(prog_name="toolbridge-api")
