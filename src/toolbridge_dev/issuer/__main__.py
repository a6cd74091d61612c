"""``python -m toolbridge_dev.issuer``: the same command line as ``toolbridge-dev-issuer``."""

from toolbridge_dev.issuer.cli import app

if __name__ == "__main__":
    app(prog_name="toolbridge-dev-issuer")
