// Documents that talk about the same things: pairs of documents with the entities both mention.
// Parameters: $min_shared (the least number of shared entities).
//   :param min_shared => 1
MATCH (a:Document)-[:HAS_CHUNK]->(:Chunk)<-[:MENTIONED_IN]-(e:Entity)-[:MENTIONED_IN]->(:Chunk)<-[:HAS_CHUNK]-(b:Document)
WHERE a.path < b.path
WITH a, b, collect(DISTINCT e.name) AS entities
WHERE size(entities) >= $min_shared
RETURN a.path AS document, b.path AS other, size(entities) AS shared, entities
ORDER BY shared DESC, document, other
