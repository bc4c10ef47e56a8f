// Chunks whose text contains a word or phrase (any case), with document and pages: where the corpus says it.
// On Neo4j, the full-text index of schema-neo4j.cypher is faster and ranks the hits:
//   CALL db.index.fulltext.queryNodes('chunk_text', 'chlorophyll') YIELD node, score RETURN node.text, score
// Parameters: $text (the word or phrase), $limit (how many chunks).
//   :param text => 'chlorophyll'
//   :param limit => 25
MATCH (d:Document)-[:HAS_CHUNK]->(c:Chunk)
WHERE toLower(c.text) CONTAINS toLower($text)
RETURN d.path AS document, c.page_start AS page_start, c.page_end AS page_end, c.text AS text
ORDER BY document, page_start
LIMIT toInteger($limit)
