"""Measurement quality (the energy-benchmark study, arXiv 2505.15631): `assess`, `compare` and `report` over a run.

`assess`, `compare`, `svg` and `report` are pure (numbers and text in, numbers and text out); `load` does the
reading, through the query core (jouled.query), and `codecarbon` reads CodeCarbon's emissions.csv.
"""
