// One document's summary and categories: the map-reduced summary of its chunk summaries, and each category
// with its share of the document's chunks (the chunks' votes).
// Parameters: $document (the document's path, file name or id).
//   :param document => 'report.pdf'
MATCH (d:Document)
WHERE d.path = $document OR d.name = $document OR d.id = $document
OPTIONAL MATCH (s:Summary)-[:SUMMARIZES]->(d)
OPTIONAL MATCH (d)-[r:IN_CATEGORY]->(k:Category)
WITH d, s, r, k
ORDER BY r.share DESC, k.name
RETURN d.path AS path, d.title AS title, s.text AS summary,
       [x IN collect({category: k.name, share: r.share}) WHERE x.category IS NOT NULL] AS categories
