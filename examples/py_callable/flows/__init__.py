"""Python package of the py_callable example flow (the flow directory is first on PYTHONPATH)."""
