"""The study file as typed, frozen data: base.py (what every section is made of), files.py (light path checks),
schema.py (the study, --set, did-you-mean).
"""
