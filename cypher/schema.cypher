// kg-etl graph schema: uniqueness constraints (each also gives the index that MERGE on the id uses).
// Applied by `kg-etl schema apply`, and automatically before every ingest. Idempotent (IF NOT EXISTS).
//
// Lexical layer:   (:Document)-[:HAS_CHUNK]->(:Chunk)-[:NEXT_CHUNK]->(:Chunk)
// Knowledge layer: (:Fact)-[:FROM_CHUNK]->(:Chunk)

CREATE CONSTRAINT document_id IF NOT EXISTS FOR (d:Document) REQUIRE d.id IS UNIQUE;
CREATE CONSTRAINT chunk_id IF NOT EXISTS FOR (c:Chunk) REQUIRE c.id IS UNIQUE;
CREATE CONSTRAINT fact_id IF NOT EXISTS FOR (f:Fact) REQUIRE f.id IS UNIQUE;
