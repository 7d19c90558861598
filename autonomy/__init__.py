"""The autonomy layer: shared contract, settings and the `autonomy` command."""
__version__ = "0.1.0"
