"""Turning a prepared study into trained runs: the plan (trials x seeds), each process's data (prepare.py), one run
(run.py), results.csv, progress, and the executors that schedule runs (executors/).
"""
