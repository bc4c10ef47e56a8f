// Every fact about an entity, with its citation: the document path and the pages of the chunk that states it.
// The entity is found by its name or any alias, in any case ("WHO" finds the World Health Organization).
// Parameters: $entity (a name or alias).
//   :param entity => 'World Health Organization'
MATCH (e:Entity)
WHERE toLower(e.name) = toLower($entity) OR any(alias IN e.aliases WHERE toLower(alias) = toLower($entity))
MATCH (f:Fact)-[:MENTIONS]->(e)
MATCH (f)-[:FROM_CHUNK]->(c:Chunk)<-[:HAS_CHUNK]-(d:Document)
RETURN e.name AS entity, e.type AS type, f.text AS fact, d.path AS document, c.page_start AS page_start,
       c.page_end AS page_end
ORDER BY document, page_start, fact
