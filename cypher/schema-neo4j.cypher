// kg-etl graph schema, Neo4j-only part: full-text indexes for searching the text that kg-etl stores.
// Applied after schema.cypher, and only when the server is Neo4j itself (kg_etl.graph.connection,
// Graph.is_neo4j): ArcadeDB, the local Bolt server, rejects CREATE FULLTEXT INDEX ("Only standard, RANGE
// and TEXT index types are supported") and turns CREATE TEXT INDEX into a plain range index.
// Idempotent (IF NOT EXISTS).
//
// Use them in Neo4j Browser, e.g.:
//   CALL db.index.fulltext.queryNodes('chunk_text', 'chlorophyll AND light') YIELD node, score
//   RETURN node.text, node.page_start, score LIMIT 10

CREATE FULLTEXT INDEX chunk_text IF NOT EXISTS FOR (c:Chunk) ON EACH [c.text];
CREATE FULLTEXT INDEX fact_text IF NOT EXISTS FOR (f:Fact) ON EACH [f.text];
CREATE FULLTEXT INDEX entity_name_text IF NOT EXISTS FOR (e:Entity) ON EACH [e.name];
CREATE FULLTEXT INDEX question_text IF NOT EXISTS FOR (q:Question) ON EACH [q.question, q.answer];
CREATE FULLTEXT INDEX summary_text IF NOT EXISTS FOR (s:Summary) ON EACH [s.text];
