"""kg-etl: PDFs to a Neo4j knowledge graph with small local LLMs."""

__version__ = "0.1.0"
