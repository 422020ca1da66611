"""What every stage uses and that knows nothing of studies: errors' helpers, names of torch classes, atomic writes,
child processes, fault points, provenance, YAML, and the registries that find plugins by looking.
"""
