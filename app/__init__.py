"""The desktop shell and the `llmos` command line: the only package that imports Qt."""
