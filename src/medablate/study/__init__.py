"""The runner: prepare a study folder, hand its runs to an executor, then analyse and report.
"""
