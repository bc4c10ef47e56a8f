"""Evaluation: what the extractors extract from real text, as numbers (``kg-etl eval``).

session.py   one model over evaluation texts, exactly as an ingest runs it (no graph, no cache)
triples.py   the WebNLG 2020 text-to-RDF scorer (SemEval-2013 matching), written from its definitions
webnlg.py    the WebNLG benchmark: read it, run the facts extractor, write candidates in its XML
gold.py      the gold set (kg_etl/data/gold): every extractor and the validation pass, scored
"""
