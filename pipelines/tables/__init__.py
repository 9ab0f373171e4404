"""Tables: every schema declared once (``schemas``), and parser events turned into
rows of the message tables (``rows``)."""
