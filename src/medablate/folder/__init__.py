"""The run-folder contract: every file name (layout.py), a typed record per file (records.py), how each is read
and written (rundir.py), checkpoint slot files and claims. Light enough for the CLI's argument checks.
"""
