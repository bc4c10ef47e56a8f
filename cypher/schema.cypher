// kg-etl graph schema: uniqueness constraints on every id (each also gives the index that MERGE on the id
// uses) and range indexes for the lookups that the ingest and the queries in cypher/queries/ make.
// Applied by `kg-etl schema apply`, and automatically before every ingest. Idempotent (IF NOT EXISTS).
// Only what both Neo4j 5 and ArcadeDB (the local Bolt server) accept; Neo4j-only extras (full-text
// indexes) are in schema-neo4j.cypher, applied only when the server is Neo4j itself.
//
// Lexical layer:   (:Document)-[:HAS_CHUNK]->(:Chunk)-[:NEXT_CHUNK]->(:Chunk)
// Knowledge layer: (:Fact)-[:FROM_CHUNK]->(:Chunk)    (:Question)-[:FROM_CHUNK]->(:Chunk)
//                  (:Fact)-[:MENTIONS]->(:Entity)-[:MENTIONED_IN]->(:Chunk)
//                  (:Entity)-[:RELATED {predicate, fact_id, doc_id}]->(:Entity)
//                  (:Chunk)-[:HAS_TOPIC {importance}]->(:Topic)-[:SUBTOPIC_OF]->(:Topic)
//                  (:Chunk)-[:IN_CATEGORY]->(:Category)<-[:IN_CATEGORY {share}]-(:Document)
//                  (:Chunk)-[:HAS_KEYWORD {relevance}]->(:Keyword)
//                  (:Summary)-[:SUMMARIZES]->(:Chunk | :Document)
// A user schema:   (:SchemaNode:<Type>)-[:MENTIONED_IN]->(:Chunk)
//                  (:SchemaNode)-[:<RELATIONSHIP> {chunk_id, doc_id}]->(:SchemaNode)
// Ids are content hashes (kg_etl/graph/resolve.py): an Entity is (type, normalised name), a Topic its
// whole path from the root, a Keyword or Category its normalised name; every other id hashes its chunk.
// Every Fact, Question and Summary carries doc_id, chunk_id, page_start and page_end: its citation.

// -- one node per id ---------------------------------------------------------------------------------------
CREATE CONSTRAINT document_id IF NOT EXISTS FOR (d:Document) REQUIRE d.id IS UNIQUE;
CREATE CONSTRAINT chunk_id IF NOT EXISTS FOR (c:Chunk) REQUIRE c.id IS UNIQUE;
CREATE CONSTRAINT fact_id IF NOT EXISTS FOR (f:Fact) REQUIRE f.id IS UNIQUE;
CREATE CONSTRAINT entity_id IF NOT EXISTS FOR (e:Entity) REQUIRE e.id IS UNIQUE;
CREATE CONSTRAINT topic_id IF NOT EXISTS FOR (t:Topic) REQUIRE t.id IS UNIQUE;
CREATE CONSTRAINT category_id IF NOT EXISTS FOR (k:Category) REQUIRE k.id IS UNIQUE;
CREATE CONSTRAINT keyword_id IF NOT EXISTS FOR (k:Keyword) REQUIRE k.id IS UNIQUE;
CREATE CONSTRAINT summary_id IF NOT EXISTS FOR (s:Summary) REQUIRE s.id IS UNIQUE;
CREATE CONSTRAINT question_id IF NOT EXISTS FOR (q:Question) REQUIRE q.id IS UNIQUE;
// A user schema's nodes (`kg-etl ingest --schema`) carry SchemaNode beside their declared type.
CREATE CONSTRAINT schema_node_id IF NOT EXISTS FOR (n:SchemaNode) REQUIRE n.id IS UNIQUE;

// -- lookups -----------------------------------------------------------------------------------------------
// A changed PDF is found by its path; `kg-etl remove` and the Browser queries take a path or a file name.
CREATE INDEX document_path IF NOT EXISTS FOR (d:Document) ON (d.path);
CREATE INDEX document_name IF NOT EXISTS FOR (d:Document) ON (d.name);
CREATE INDEX document_status IF NOT EXISTS FOR (d:Document) ON (d.status);
CREATE INDEX chunk_doc_id IF NOT EXISTS FOR (c:Chunk) ON (c.doc_id);
CREATE INDEX chunk_status IF NOT EXISTS FOR (c:Chunk) ON (c.status);
CREATE INDEX fact_doc_id IF NOT EXISTS FOR (f:Fact) ON (f.doc_id);
CREATE INDEX entity_name IF NOT EXISTS FOR (e:Entity) ON (e.name);
CREATE INDEX entity_type IF NOT EXISTS FOR (e:Entity) ON (e.type);
CREATE INDEX topic_name IF NOT EXISTS FOR (t:Topic) ON (t.name);
CREATE INDEX topic_path IF NOT EXISTS FOR (t:Topic) ON (t.path);
CREATE INDEX keyword_name IF NOT EXISTS FOR (k:Keyword) ON (k.name);
CREATE INDEX category_name IF NOT EXISTS FOR (k:Category) ON (k.name);
CREATE INDEX summary_doc_id IF NOT EXISTS FOR (s:Summary) ON (s.doc_id);
CREATE INDEX question_doc_id IF NOT EXISTS FOR (q:Question) ON (q.doc_id);
CREATE INDEX question_verdict IF NOT EXISTS FOR (q:Question) ON (q.verdict);
CREATE INDEX schema_node_name IF NOT EXISTS FOR (n:SchemaNode) ON (n.name);
CREATE INDEX schema_node_type IF NOT EXISTS FOR (n:SchemaNode) ON (n.type);
// Removing a document deletes its RELATED relationships by doc_id.
CREATE INDEX related_doc_id IF NOT EXISTS FOR ()-[r:RELATED]-() ON (r.doc_id);
CREATE INDEX related_predicate IF NOT EXISTS FOR ()-[r:RELATED]-() ON (r.predicate);
