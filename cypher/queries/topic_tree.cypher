// The taxonomy under a topic: every subtopic at any depth, with its full path, its depth below the topic and
// how many chunks are about it. Topics are nodes of one tree per corpus, merged across documents by path.
// Parameters: $topic (a topic's name, e.g. 'Biology', or its full path, e.g. 'Science > Biology').
//   :param topic => 'Biology'
MATCH (root:Topic)
WHERE toLower(root.name) = toLower($topic) OR toLower(root.path) = toLower($topic)
MATCH (t:Topic)-[:SUBTOPIC_OF*0..]->(root)
OPTIONAL MATCH (c:Chunk)-[:HAS_TOPIC]->(t)
RETURN root.path AS root, t.path AS topic, t.level - root.level AS depth, count(DISTINCT c) AS chunks
ORDER BY root, topic
