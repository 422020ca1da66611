"""`python -m medablate.data.sources`: the README's table of sources."""

from medablate.data.sources import table

print(table())
