// An entity's neighbourhood as a picture for Neo4j Browser's graph view: the entity, the entities it is
// RELATED to, and the facts that mention it.
// Parameters: $entity (a name or alias).
//   :param entity => 'World Health Organization'
MATCH (e:Entity)
WHERE toLower(e.name) = toLower($entity) OR any(alias IN e.aliases WHERE toLower(alias) = toLower($entity))
MATCH path = (e)-[:RELATED]-(:Entity)
RETURN path
UNION
MATCH (e:Entity)
WHERE toLower(e.name) = toLower($entity) OR any(alias IN e.aliases WHERE toLower(alias) = toLower($entity))
MATCH path = (:Fact)-[:MENTIONS]->(e)
RETURN path
