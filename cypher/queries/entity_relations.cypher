// The relations of an entity, both ways: (subject)-[:RELATED {predicate}]->(object), each with the fact that
// states it and where (document path, pages). RELATED is the one relationship type for every extracted
// predicate, so the predicate is a property, not a type.
// Parameters: $entity (a name or alias).
//   :param entity => 'World Health Organization'
MATCH (e:Entity)
WHERE toLower(e.name) = toLower($entity) OR any(alias IN e.aliases WHERE toLower(alias) = toLower($entity))
MATCH (e)-[r:RELATED]-(other:Entity)
MATCH (f:Fact {id: r.fact_id})-[:FROM_CHUNK]->(c:Chunk)<-[:HAS_CHUNK]-(d:Document)
RETURN startNode(r).name AS subject, r.predicate AS predicate, endNode(r).name AS object,
       other.type AS other_type, f.text AS fact, d.path AS document, c.page_start AS page_start,
       c.page_end AS page_end
ORDER BY predicate, object, subject
