"""The ToolBridge REST API: a Python implementation of the backend contract."""
