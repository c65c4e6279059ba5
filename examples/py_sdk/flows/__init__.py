"""Package of the py_sdk example flow (the flow directory is first on PYTHONPATH)."""
