"""Analysis: outcomes, statistics, paired comparisons, seed ensembles and the validation-test gap, computed from the
run folder alone; it writes tables, never figures.
"""
