// Keywords that occur together: pairs of keywords found in the same chunks, with how many chunks share them.
// Parameters: $min_count (the least number of shared chunks), $limit (how many pairs).
//   :param min_count => 2
//   :param limit => 50
MATCH (a:Keyword)<-[:HAS_KEYWORD]-(c:Chunk)-[:HAS_KEYWORD]->(b:Keyword)
WHERE a.name < b.name
WITH a, b, count(DISTINCT c) AS chunks
WHERE chunks >= $min_count
RETURN a.name AS keyword, b.name AS other, chunks
ORDER BY chunks DESC, keyword, other
LIMIT toInteger($limit)
