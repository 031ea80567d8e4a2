"""The control service: a FastAPI app that starts, lists and stops training runs."""
