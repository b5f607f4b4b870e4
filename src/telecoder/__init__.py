"""TeleCoder: send a task, get a pull request — or an answer."""

__version__ = "0.1.0"

__all__ = ["__version__"]
