// Entities known under several surface forms: what entity resolution merged ("WHO" and "World Health
// Organization", "The Beatles" and "Beatles"), with how many chunks mention each.
// Parameters: $min_aliases (the least number of different surface forms to list an entity).
//   :param min_aliases => 2
MATCH (e:Entity)
WHERE size(e.aliases) >= $min_aliases
OPTIONAL MATCH (e)-[:MENTIONED_IN]->(c:Chunk)
RETURN e.name AS entity, e.type AS type, e.aliases AS aliases, count(c) AS chunks
ORDER BY size(aliases) DESC, entity
