// The topics of one document, most important first: each topic's full path, how many of the document's
// chunks are about it, and its summed and highest importance (1 minor .. 5 the main subject).
// Parameters: $document (the document's path, file name or id).
//   :param document => 'report.pdf'
MATCH (d:Document)-[:HAS_CHUNK]->(c:Chunk)-[r:HAS_TOPIC]->(t:Topic)
WHERE d.path = $document OR d.name = $document OR d.id = $document
RETURN t.path AS topic, t.level AS level, count(DISTINCT c) AS chunks, sum(r.importance) AS importance,
       max(r.importance) AS top_importance
ORDER BY importance DESC, topic
