"""What people read: the report (HTML and Markdown), figures, the methods text and LaTeX tables, and outputs.py,
which runs the analysis and then draws from it.
"""
