// The most important topics across the corpus: importance summed over every chunk about the topic, with
// how many chunks and documents that is.
// Parameters: $limit (how many topics).
//   :param limit => 20
MATCH (d:Document)-[:HAS_CHUNK]->(c:Chunk)-[r:HAS_TOPIC]->(t:Topic)
RETURN t.path AS topic, t.level AS level, sum(r.importance) AS importance, count(DISTINCT c) AS chunks,
       count(DISTINCT d) AS documents
ORDER BY importance DESC, topic
LIMIT toInteger($limit)
