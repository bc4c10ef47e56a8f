// The corpus at a glance: every document with its status, pages and what was extracted from it.
// Parameters: none.
// A status other than "done": being ingested (pending, processing) or unreadable (failed).
MATCH (d:Document)
OPTIONAL MATCH (d)-[:HAS_CHUNK]->(c:Chunk)
WITH d, count(c) AS chunks, sum(CASE WHEN c.status = 'failed' THEN 1 ELSE 0 END) AS failed_chunks
OPTIONAL MATCH (d)-[:HAS_CHUNK]->(:Chunk)<-[:FROM_CHUNK]-(f:Fact)
WITH d, chunks, failed_chunks, count(f) AS facts
OPTIONAL MATCH (d)-[:HAS_CHUNK]->(:Chunk)<-[:FROM_CHUNK]-(q:Question)
RETURN d.path AS path, d.title AS title, d.status AS status, d.n_pages AS pages, chunks, failed_chunks, facts,
       count(q) AS questions
ORDER BY path
