"""Pure Python used inside Spark: heuristics, parsing, scoring.

Nothing here imports pyspark, jobs/ or training/. Functions take and return plain values so they
run the same in a unit test, on an executor, or in a notebook.
"""
